/**
 * Server-sent events as llama-server streams them (`data: {...}` blocks separated by blank lines, `data: [DONE]`
 * at the end of an OpenAI-style stream). Fed arbitrary chunks; yields the data of each complete event.
 */
export class SseDecoder {
  private buffer = '';
  private data: string[] = [];

  /** Feeds a chunk; returns the data of every event it completed. */
  push(chunk: string): string[] {
    this.buffer += chunk;
    const events: string[] = [];
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).replace(/\r$/, '');
      this.buffer = this.buffer.slice(newline + 1);
      if (line === '') {
        if (this.data.length > 0) events.push(this.data.join('\n'));
        this.data = [];
      } else if (line.startsWith('data:')) {
        this.data.push(line.slice(5).replace(/^ /, ''));
      }
      // Comments (`:`), `event:`, `id:` and `retry:` carry nothing llama-server uses.
    }
    return events;
  }

  /** The last event when the stream ended without a blank line after it. */
  end(): string[] {
    const rest = this.push('\n\n');
    this.buffer = '';
    return rest;
  }
}

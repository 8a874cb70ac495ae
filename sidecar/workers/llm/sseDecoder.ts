/**
 * Server-sent events as llama-server streams them (`data: {...}` blocks separated by blank lines, `data: [DONE]`
 * at the end of an OpenAI-style stream). Fed arbitrary chunks; yields the data of each complete event.
 */
export class SseDecoder {
  /** Text after the last line break, kept as its chunks: a long line arriving in small pieces stays linear. */
  private pending: string[] = [];
  private data: string[] = [];

  /** Feeds a chunk; returns the data of every event it completed. */
  push(chunk: string): string[] {
    if (!chunk.includes('\n')) {
      if (chunk) this.pending.push(chunk);
      return [];
    }
    const text = this.pending.join('') + chunk;
    const events: string[] = [];
    let start = 0;
    let newline: number;
    while ((newline = text.indexOf('\n', start)) >= 0) {
      const line = text.slice(start, newline).replace(/\r$/, '');
      start = newline + 1;
      if (line === '') {
        if (this.data.length > 0) events.push(this.data.join('\n'));
        this.data = [];
      } else if (line.startsWith('data:')) {
        this.data.push(line.slice(5).replace(/^ /, ''));
      }
      // Comments (`:`), `event:`, `id:` and `retry:` carry nothing llama-server uses.
    }
    this.pending = start < text.length ? [text.slice(start)] : [];
    return events;
  }

  /** The last event when the stream ended without a blank line after it. */
  end(): string[] {
    const rest = this.push('\n\n');
    this.pending = [];
    return rest;
  }
}

/**
 * Seeded mutation fuzzing for the parsers: a small PRNG, byte and text mutators, and a loop that names the seed and
 * the case of any failure so that it can be replayed.
 *
 * The seed is fixed so that every CI run checks the same cases; set VRAM_RELAY_FUZZ_SEED to explore others, and
 * VRAM_RELAY_FUZZ_SCALE (e.g. 10) to run more cases per target.
 */

import { setImmediate as yieldToEventLoop } from 'node:timers/promises';

export const FUZZ_SEED = Number(process.env.VRAM_RELAY_FUZZ_SEED ?? 20_260_501) >>> 0;
const SCALE = Math.max(0.01, Number(process.env.VRAM_RELAY_FUZZ_SCALE ?? 1) || 1);

/** How many cases a target runs: `base` times the scale. */
export function cases(base: number): number {
  return Math.max(1, Math.round(base * SCALE));
}

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
export class Random {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  chance(p: number): boolean {
    return this.next() < p;
  }

  bytes(length: number): Buffer {
    const out = Buffer.alloc(length);
    for (let i = 0; i < length; i++) out[i] = this.int(256);
    return out;
  }
}

/** Values that break parsers: boundaries of integer widths, and numbers far beyond any real file. */
export const INTERESTING_U64 = [0n, 1n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 40n, 2n ** 53n + 1n, 2n ** 63n, 2n ** 64n - 1n];

/** One random edit of `input`: flip bits, overwrite, insert or delete bytes, splice in an interesting integer. */
export function mutateBytes(random: Random, input: Buffer, dictionary: readonly Buffer[] = []): Buffer {
  const bytes = Buffer.from(input);
  const at = () => random.int(Math.max(1, bytes.length));
  switch (random.int(8)) {
    case 0: {
      if (bytes.length === 0) return random.bytes(1 + random.int(8));
      bytes[at()] ^= 1 << random.int(8);
      return bytes;
    }
    case 1: {
      if (bytes.length === 0) return random.bytes(1);
      bytes[at()] = random.int(256);
      return bytes;
    }
    case 2: {
      const where = at();
      return Buffer.concat([bytes.subarray(0, where), random.bytes(1 + random.int(16)), bytes.subarray(where)]);
    }
    case 3: {
      const where = at();
      return Buffer.concat([bytes.subarray(0, where), bytes.subarray(where + 1 + random.int(16))]);
    }
    case 4:
    case 5: {
      // A length or count field set to something huge, at a random 8- or 4-byte position.
      const wide = random.chance(0.6);
      const width = wide ? 8 : 4;
      if (bytes.length < width) return bytes;
      const where = random.int(bytes.length - width + 1);
      const value = random.pick(INTERESTING_U64);
      if (wide) bytes.writeBigUInt64LE(value, where);
      else bytes.writeUInt32LE(Number(value & 0xffffffffn), where);
      return bytes;
    }
    case 6: {
      if (dictionary.length === 0) return bytes;
      const where = at();
      return Buffer.concat([bytes.subarray(0, where), random.pick(dictionary), bytes.subarray(where)]);
    }
    default: {
      // Duplicate a slice somewhere else.
      const from = at();
      const slice = bytes.subarray(from, from + 1 + random.int(64));
      const where = at();
      return Buffer.concat([bytes.subarray(0, where), slice, bytes.subarray(where)]);
    }
  }
}

/** Characters parsers of text logs meet in the wild: controls, NUL, ANSI codes, separators, replacement chars. */
const TEXT_NOISE = ['\0', '\r', '\n', '\r\n', '\t', '\x1b[K', '\x1b[0m', '\x1b[', '|', '/', '-', ':', ',', '(', ')', "'", '"', '\uFFFD', '\u2581', 'é', '.', ' '];

/** One random edit of a text: the byte mutations, plus text noise, dictionary words and number swaps. */
export function mutateText(random: Random, input: string, dictionary: readonly string[] = []): string {
  const at = () => random.int(input.length + 1);
  switch (random.int(7)) {
    case 0:
      return mutateBytes(random, Buffer.from(input, 'utf8')).toString('utf8');
    case 1: {
      const where = at();
      return input.slice(0, where) + random.pick(TEXT_NOISE) + input.slice(where);
    }
    case 2: {
      if (dictionary.length === 0) return input;
      const where = at();
      return input.slice(0, where) + random.pick(dictionary) + input.slice(where);
    }
    case 3: {
      const where = at();
      return input.slice(0, where) + input.slice(where + 1 + random.int(32));
    }
    case 4:
      // Numbers become other numbers: huge, negative, fractional, malformed.
      return input.replace(/\d+(\.\d+)?/g, (match) =>
        random.chance(0.3) ? random.pick(['0', '-1', '1e309', '9'.repeat(40), '1.2.3', '.', 'NaN', 'inf', '00000000001', '4294967296']) : match,
      );
    case 5: {
      // A line repeated many times, or made very long.
      const lines = input.split('\n');
      const line = random.pick(lines);
      return random.chance(0.5) ? input + `\n${line}`.repeat(1 + random.int(200)) : input.replace(line, line.repeat(1 + random.int(50)));
    }
    default: {
      const where = at();
      const other = at();
      return input.slice(0, where) + input.slice(Math.min(where, other), Math.max(where, other)) + input.slice(where);
    }
  }
}

/** A few mutations in a row (most bugs need one or two). */
export function mutateTextTimes(random: Random, input: string, dictionary: readonly string[] = []): string {
  let out = input;
  const edits = 1 + random.int(3);
  for (let i = 0; i < edits; i++) out = mutateText(random, out, dictionary);
  return out;
}

/** Cuts a text into random chunks (stream parsers must not care where the chunk boundaries fall). */
export function randomChunks(random: Random, text: string, maxChunk = 64): string[] {
  const chunks: string[] = [];
  let at = 0;
  while (at < text.length) {
    const size = random.chance(0.1) ? 1 : 1 + random.int(maxChunk);
    chunks.push(text.slice(at, at + size));
    at += size;
  }
  return chunks;
}

/** Every number anywhere inside `value` (for "no NaN, no Infinity" checks). */
export function numbersIn(value: unknown, path = '$'): [string, number][] {
  if (typeof value === 'number') return [[path, value]];
  if (Array.isArray(value)) return value.flatMap((item, index) => numbersIn(item, `${path}[${index}]`));
  if (value && typeof value === 'object') return Object.entries(value).flatMap(([key, item]) => numbersIn(item, `${path}.${key}`));
  return [];
}

/** Fails when any number inside `value` is NaN or infinite. */
export function assertFiniteNumbers(value: unknown, where: string): void {
  for (const [path, number] of numbersIn(value)) {
    if (!Number.isFinite(number)) throw new Error(`${where}: ${path} is ${number}`);
  }
}

/** What a failing case prints: the seed and the case number to replay it, and a readable excerpt of the input. */
export function describeCase(target: string, index: number, input: string | Buffer): string {
  const excerpt = typeof input === 'string' ? JSON.stringify(input.length > 300 ? `${input.slice(0, 300)}...` : input) : `${input.length} bytes: ${input.subarray(0, 64).toString('hex')}`;
  return `${target} case ${index} (VRAM_RELAY_FUZZ_SEED=${FUZZ_SEED}): ${excerpt}`;
}

/**
 * Runs `count` cases. Each gets its own PRNG (derived from the seed, the target and the index) so that one case
 * replays alone. Gives the event loop a turn every few cases so the test's timeout can fire on a slow parser.
 */
export async function fuzz(target: string, count: number, run: (random: Random, index: number) => void | Promise<void>): Promise<void> {
  const salt = [...target].reduce((hash, char) => Math.imul(hash ^ char.charCodeAt(0), 16_777_619) >>> 0, 2_166_136_261);
  for (let index = 0; index < count; index++) {
    await run(new Random((FUZZ_SEED ^ salt ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0), index);
    if (index % 50 === 49) await yieldToEventLoop();
  }
}

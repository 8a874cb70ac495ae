/**
 * A stand-in for llama.cpp's `llama-server`, for testing the sidecar's adapter on machines without the binary or
 * a GPU. It accepts the same flags (`-m`, `--port`, `--host`, `-c`, `-ngl`, `--fit`), prints the same log lines
 * (device, offloaded layers, model / KV / compute buffer sizes, computed from the GGUF header), answers
 * `GET /health` with 503 while "loading" and 200 after, and streams `POST /completion`, `/infill` and
 * `/v1/chat/completions` as server-sent events in llama-server's shapes. The text is made-up words, deterministic
 * for a seed and prompt.
 *
 * Failure modes, switched on by environment variables, for the adapter's recovery paths:
 *   LLAMA_STANDIN_LOAD_MS          time spent "loading" (default 300)
 *   LLAMA_STANDIN_TOKEN_MS         time between streamed tokens (default 2)
 *   LLAMA_STANDIN_FIM=1            the model has fill-in-the-middle tokens (otherwise /infill answers 501)
 *   LLAMA_STANDIN_LOAD_FAIL=oom    fail the load with CUDA out-of-memory lines and exit 1
 *   LLAMA_STANDIN_CRASH_ONCE=FILE  exit 134 (as after an abort) after 3 tokens of a request, once (FILE marks that it happened)
 *   LLAMA_STANDIN_HANG_ONCE=FILE   go silent after 3 tokens of a request, once
 *   LLAMA_STANDIN_IGNORE_SIGTERM=1 ignore SIGTERM (only SIGKILL stops it)
 *   LLAMA_STANDIN_CHILD_PID_FILE=F start a child process and write its pid to F (to check whole-tree stops)
 *   LLAMA_STANDIN_ARGS_FILE=FILE   write the command line it got to FILE as JSON
 *
 * Run: node --import tsx test/standins/llama-server-standin.ts [flags]
 */

import { spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';

const HELP = `----- common params -----

-h,    --help, --usage                  print usage and exit
--version                               show version and build info
-t,    --threads N                      number of CPU threads to use during generation (default: -1)
-c,    --ctx-size N                     size of the prompt context (default: 4096, 0 = loaded from model)
-n,    --predict, --n-predict N         number of tokens to predict (default: -1, -1 = infinity)
-b,    --batch-size N                   logical maximum batch size (default: 2048)
-fa,   --flash-attn [on|off|auto]       set Flash Attention use ('on', 'off', or 'auto', default: 'auto')
-ctk,  --cache-type-k TYPE              KV cache data type for K (default: f16)
-ctv,  --cache-type-v TYPE              KV cache data type for V (default: f16)
--mlock                                 force system to keep model in RAM rather than swapping or compressing
--no-mmap                               do not memory-map model
-ngl,  --gpu-layers, --n-gpu-layers N   max. number of layers to store in VRAM, either an exact number,
                                        'auto', or 'all' (default: auto)
-fit,  --fit [on|off]                   whether to adjust unset arguments to fit in device memory ('on' or
                                        'off', default: 'on')
-fitt, --fit-target MiB                 target margin per device for --fit (default: 1024)
-m,    --model FNAME                    model path to load

----- example-specific params -----

--host HOST                             ip address to listen, or bind to an UNIX socket if the address ends
                                        with .sock (default: 127.0.0.1)
--port PORT                             port to listen (default: 8080)
--metrics                               enable prometheus compatible metrics endpoint (default: disabled)
--slots                                 expose slots monitoring endpoint (default: enabled)
--sleep-idle-seconds SECONDS            number of seconds of idleness after which the server will sleep
`;

const MiB = 1024 * 1024;
const WORDS = ['the', 'memory', 'model', 'layer', 'token', 'river', 'stone', 'light', 'quiet', 'green', 'north', 'paper', 'signal', 'window', 'cloud', 'ember'];

interface Flags {
  model?: string;
  host: string;
  port: number;
  ctx: number;
  ngl: string;
  fit: string;
}

function parseFlags(argv: string[]): Flags {
  const flags: Flags = { host: '127.0.0.1', port: 8080, ctx: 4096, ngl: 'auto', fit: 'on' };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const next = () => argv[++i];
    if (arg === '-m' || arg === '--model') flags.model = next();
    else if (arg === '--host') flags.host = next();
    else if (arg === '--port') flags.port = Number(next());
    else if (arg === '-c' || arg === '--ctx-size') flags.ctx = Number(next());
    else if (arg === '-ngl' || arg === '--gpu-layers' || arg === '--n-gpu-layers') flags.ngl = next();
    else if (arg === '-fit' || arg === '--fit') flags.fit = next();
  }
  return flags;
}

const log = (line: string) => process.stderr.write(`${line}\n`);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const env = (name: string) => process.env[`LLAMA_STANDIN_${name}`];

interface ModelShape {
  layers: number;
  embedding: number;
  kvWidth: number;
  fileBytes: number;
}

async function readShape(path: string): Promise<ModelShape | string> {
  try {
    const handle = await open(path, 'r');
    const magic = Buffer.alloc(4);
    await handle.read(magic, 0, 4, 0);
    await handle.close();
    if (magic.toString('latin1') !== 'GGUF') return `gguf_init_from_file_impl: invalid magic characters: '${magic.toString('latin1').replace(/[^\x20-\x7e]/g, '?')}', expected 'GGUF'`;
  } catch {
    return `gguf_init_from_file: failed to open GGUF file '${path}'`;
  }
  const meta = await readGgufNumbers(path);
  const arch = String(meta.get('general.architecture') ?? 'llama');
  const num = (key: string, fallback: number) => Number(meta.get(`${arch}.${key}`) ?? fallback);
  const embedding = num('embedding_length', 64);
  const heads = num('attention.head_count', 1);
  const kvHeads = num('attention.head_count_kv', heads);
  return { layers: num('block_count', 1), embedding, kvWidth: (embedding / heads) * kvHeads, fileBytes: (await stat(path)).size };
}

/**
 * The scalar key-values of a GGUF header (numbers and strings; arrays skipped). Small on purpose: the stand-in
 * starts many times per test run and must start fast.
 */
async function readGgufNumbers(path: string): Promise<Map<string, number | string>> {
  const handle = await open(path, 'r');
  const header = Buffer.alloc(Math.min(4 * MiB, (await handle.stat()).size));
  await handle.read(header, 0, header.length, 0);
  await handle.close();
  let at = 0;
  const u32 = () => ((at += 4), header.readUInt32LE(at - 4));
  const u64 = () => ((at += 8), Number(header.readBigUInt64LE(at - 8)));
  const str = () => {
    const length = u64();
    at += length;
    return header.toString('utf8', at - length, at);
  };
  const sizes: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };
  const scalar = (type: number): number | string => {
    switch (type) {
      case 4:
        return u32();
      case 5:
        return ((at += 4), header.readInt32LE(at - 4));
      case 6:
        return ((at += 4), header.readFloatLE(at - 4));
      case 8:
        return str();
      case 10:
        return u64();
      default:
        at += sizes[type] ?? 0;
        return 0;
    }
  };
  const count = Number(header.readBigUInt64LE(16));
  at = 24;
  const values = new Map<string, number | string>();
  for (let i = 0; i < count; i++) {
    const key = str();
    const type = u32();
    if (type === 9) {
      const elementType = u32();
      const length = u64();
      for (let j = 0; j < length; j++) scalar(elementType);
    } else {
      values.set(key, scalar(type));
    }
  }
  return values;
}

function mib(bytes: number): string {
  return (bytes / MiB).toFixed(2).padStart(8);
}

/** Deterministic made-up words for a seed and prompt. */
function* words(seed: number, prompt: string): Generator<string> {
  let state = (seed ^ [...prompt].reduce((hash, ch) => Math.imul(hash ^ ch.charCodeAt(0), 16777619), 2166136261)) >>> 0;
  for (let i = 0; ; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    yield `${i === 0 ? '' : ' '}${WORDS[state % WORDS.length]}`;
  }
}

async function readBody(request: IncomingMessage): Promise<Record<string, unknown>> {
  let text = '';
  for await (const chunk of request) text += chunk;
  return text ? (JSON.parse(text) as Record<string, unknown>) : {};
}

function json(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { 'content-type': 'application/json; charset=utf-8' });
  response.end(JSON.stringify(body));
}

/** Marks a one-time failure as used; true the first time only. */
function firstTime(markerFile: string | undefined): boolean {
  if (!markerFile || existsSync(markerFile)) return false;
  writeFileSync(markerFile, String(process.pid));
  return true;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv.includes('-h') || argv.includes('--help') || argv.includes('--usage')) {
    process.stdout.write(HELP);
    return;
  }
  const argsFile = env('ARGS_FILE');
  if (argsFile) writeFileSync(argsFile, JSON.stringify(argv));
  const flags = parseFlags(argv);
  const tokenMs = Number(env('TOKEN_MS') ?? 2);

  log('build: 0 (stand-in) with node for test');
  log('system info: n_threads = 2, n_threads_batch = 2, total_threads = 2');

  if (env('IGNORE_SIGTERM') === '1') process.on('SIGTERM', () => log('srv    operator(): ignoring SIGTERM (stand-in)'));
  else {
    process.on('SIGTERM', () => {
      log('srv    operator(): operator(): cleaning up before exit...');
      process.exit(0);
    });
  }
  const childPidFile = env('CHILD_PID_FILE');
  if (childPidFile) {
    const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' });
    writeFileSync(childPidFile, String(child.pid));
  }

  let loaded = false;
  let state: 'loading' | 'ready' = 'loading';
  const server = createServer((request, response) => {
    void handle(request, response).catch((error: Error) => {
      if (!response.headersSent) json(response, 500, { error: { code: 500, message: error.message, type: 'server_error' } });
      else response.end();
    });
  });

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://localhost');
    if (request.method === 'GET' && url.pathname === '/health') {
      if (state === 'loading') return json(response, 503, { error: { code: 503, message: 'Loading model', type: 'unavailable_error' } });
      return json(response, 200, { status: 'ok' });
    }
    if (request.method !== 'POST' || !['/completion', '/infill', '/v1/chat/completions'].includes(url.pathname)) {
      return json(response, 404, { error: { code: 404, message: 'File Not Found', type: 'not_found_error' } });
    }
    if (!loaded) return json(response, 503, { error: { code: 503, message: 'Loading model', type: 'unavailable_error' } });
    const body = await readBody(request);
    if (url.pathname === '/infill' && env('FIM') !== '1') {
      return json(response, 501, { error: { code: 501, message: 'Infill is not supported by this model: prefix token is missing', type: 'not_supported_error' } });
    }
    const chat = url.pathname === '/v1/chat/completions';
    const maxTokens = Number((chat ? body.max_tokens : body.n_predict) ?? 16);
    const prompt = chat ? JSON.stringify(body.messages) : url.pathname === '/infill' ? `${body.input_prefix}|${body.input_suffix}` : String(body.prompt ?? '');
    const seed = Number(body.seed ?? 0);
    const crash = firstTime(env('CRASH_ONCE'));
    const hang = !crash && firstTime(env('HANG_ONCE'));

    response.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const send = (data: unknown) => response.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
    const id = `chatcmpl-standin${Date.now()}`;
    const source = words(seed, prompt);
    for (let i = 0; i < maxTokens; i++) {
      if (response.destroyed) return;
      if (i === 3 && crash) {
        log('ggml_backend_cuda_buffer_type_alloc_buffer: allocating 512.00 MiB on device 0: cudaMalloc failed: out of memory');
        // What a CUDA out-of-memory abort looks like from outside: exit 134.
        process.exit(134);
      }
      if (i === 3 && hang) {
        await sleep(10 * 60_000);
        return;
      }
      const piece = source.next().value as string;
      if (chat) send({ choices: [{ finish_reason: null, index: 0, delta: { content: piece } }], created: Math.floor(Date.now() / 1000), id, model: 'standin', object: 'chat.completion.chunk' });
      else send({ index: 0, content: piece, tokens: [], stop: false, id_slot: -1, tokens_predicted: i + 1, tokens_evaluated: prompt.length });
      await sleep(tokenMs);
    }
    if (chat) {
      send({ choices: [{ finish_reason: 'length', index: 0, delta: {} }], created: Math.floor(Date.now() / 1000), id, model: 'standin', object: 'chat.completion.chunk' });
      send('[DONE]');
    } else {
      send({ index: 0, content: '', tokens: [], stop: true, id_slot: 0, stop_type: 'limit', tokens_predicted: maxTokens, tokens_evaluated: prompt.length });
    }
    response.end();
  }

  server.once('error', (error: NodeJS.ErrnoException) => {
    log(`start: couldn't bind HTTP server socket, hostname: ${flags.host}, port: ${flags.port} (${error.code})`);
    process.exit(1);
  });
  await new Promise<void>((resolve) => server.listen(flags.port, flags.host, resolve));
  log(`main: HTTP server is listening, hostname: ${flags.host}, port: ${flags.port}, http threads: 2`);
  log('main: loading model');

  if (!flags.model) {
    log('main: exiting due to model loading error (no -m given)');
    process.exit(1);
  }
  const shape = await readShape(flags.model);
  if (typeof shape === 'string') {
    log(shape);
    log(`llama_model_load: error loading model: llama_model_loader: failed to load model from ${flags.model}`);
    log('llama_model_load_from_file_impl: failed to load model');
    log(`common_init_from_params: failed to load model '${flags.model}'`);
    log('srv    load_model: failed to load model');
    log('main: exiting due to model loading error');
    process.exit(1);
  }

  const freeMiB = Number(env('FREE_MIB') ?? 12288);
  log(`llama_model_load_from_file_impl: using device CUDA0 (Stand-in GPU) (0000:01:00.0) - ${freeMiB} MiB free`);
  const totalLayers = shape.layers + 1;
  const gpuLayers = flags.ngl === 'all' || flags.ngl === 'auto' ? totalLayers : Math.min(totalLayers, Math.max(0, Number(flags.ngl)));
  const gpuWeights = Math.round((shape.fileBytes * gpuLayers) / totalLayers);
  await sleep(Number(env('LOAD_MS') ?? 300) / 2);
  if (env('LOAD_FAIL') === 'oom') {
    log(`ggml_backend_cuda_buffer_type_alloc_buffer: allocating ${mib(gpuWeights).trim()} MiB on device 0: cudaMalloc failed: out of memory`);
    log('alloc_tensor_range: failed to allocate CUDA0 buffer of size 123456789');
    log('llama_model_load: error loading model: unable to allocate CUDA0 buffer');
    log('main: exiting due to model loading error');
    process.exit(1);
  }
  log(`load_tensors: offloading ${Math.min(gpuLayers, shape.layers)} repeating layers to GPU`);
  log(`load_tensors: offloaded ${gpuLayers}/${totalLayers} layers to GPU`);
  log(`load_tensors:        CUDA0 model buffer size = ${mib(gpuWeights)} MiB`);
  log(`load_tensors:   CPU_Mapped model buffer size = ${mib(shape.fileBytes - gpuWeights)} MiB`);
  log(`llama_context: n_ctx         = ${flags.ctx}`);
  const kv = 2 * shape.layers * flags.ctx * shape.kvWidth * 2;
  log(`llama_kv_cache:      CUDA0 KV buffer size = ${mib(kv)} MiB`);
  log(`llama_context:      CUDA0 compute buffer size = ${mib(Math.max(MiB, flags.ctx * 1024))} MiB`);
  log(`llama_context:  CUDA_Host compute buffer size = ${mib(flags.ctx * 64)} MiB`);
  await sleep(Number(env('LOAD_MS') ?? 300) / 2);
  loaded = true;
  state = 'ready';
  log('srv    load_model: initializing slots, n_slots = 1');
  log(`main: server is listening on http://${flags.host}:${flags.port} - starting the main loop`);
}

main().catch((error: Error) => {
  log(`stand-in failed: ${error.stack ?? error.message}`);
  process.exit(1);
});

import { afterEach, beforeEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { createMessageConnection, ResponseError, StreamMessageReader, StreamMessageWriter } from 'vscode-languageserver/node';
import type { MessageConnection } from 'vscode-languageserver/node';
import { JobDoneNotification, REQUEST_METHODS, SnapshotNotification } from '../../../sidecar/protocol';
import { createApiClient } from '../../../sidecar/transport/apiClient';
import type { SidecarApiClient } from '../../../sidecar/transport/apiClient';
import { bindApi } from '../../../sidecar/transport/protocolHandlers';
import type { DisposableLike, RpcConnection } from '../../../sidecar/transport/protocolHandlers';
import { createFakeSidecarApi, FAKE_SNAPSHOT, until, VALID_SETTINGS } from './fakeSidecarApi';
import type { FakeSidecarApi } from './fakeSidecarApi';

const IMAGE_SPEC = { kind: 'image', modelPath: '/m/sdxl.safetensors', prompt: 'a lighthouse', width: 1024, height: 1024, batch: 1, steps: 20, seed: 7, outputPath: '/tmp/out.png' } as const;

function isRpcError(code: number, message?: RegExp) {
  return (error: unknown) => error instanceof ResponseError && error.code === code && (!message || message.test(error.message));
}

describe('bindApi over an in-memory JSON-RPC pair', () => {
  let api: FakeSidecarApi;
  let server: MessageConnection;
  let clientConnection: MessageConnection;
  let client: SidecarApiClient;
  let binding: DisposableLike;

  beforeEach(() => {
    const up = new PassThrough();
    const down = new PassThrough();
    server = createMessageConnection(new StreamMessageReader(up), new StreamMessageWriter(down));
    clientConnection = createMessageConnection(new StreamMessageReader(down), new StreamMessageWriter(up));
    api = createFakeSidecarApi();
    binding = bindApi(server, api);
    server.listen();
    clientConnection.listen();
    client = createApiClient(clientConnection, () => clientConnection.dispose());
  });

  afterEach(async () => {
    binding.dispose();
    await client.dispose();
    server.dispose();
  });

  it('registers every request of the protocol', () => {
    const registered: string[] = [];
    const recorder: RpcConnection = {
      onRequest: (method) => (registered.push(method), { dispose() {} }),
      sendNotification: () => undefined,
    };
    bindApi(recorder, createFakeSidecarApi()).dispose();
    assert.deepEqual([...registered].sort(), [...REQUEST_METHODS].sort());
  });

  it('passes valid calls through with their params and answers with the results', { timeout: 10_000 }, async () => {
    assert.deepEqual(await client.configure(VALID_SETTINGS), { applied: true, restartNeeded: [] });
    assert.deepEqual(await client.getSnapshot(), FAKE_SNAPSHOT);
    assert.deepEqual(await client.submitJob({ spec: IMAGE_SPEC, priority: 'batch' }), { jobId: 'job-1' });
    assert.deepEqual(await client.setLlmState({ state: 'warm' }), { state: 'warm', tookMs: 0 });
    assert.deepEqual(await clientConnection.sendRequest('vramRelay/getDecisions'), []);
    assert.deepEqual(
      api.calls.map((call) => call.method),
      ['configure', 'getSnapshot', 'submitJob', 'setLlmState', 'getDecisions'],
    );
    assert.deepEqual(api.calls[0].params, VALID_SETTINGS);
    assert.deepEqual(api.calls[4].params, {});
  });

  it('answers malformed params with InvalidParams saying what to fix, without calling the service', { timeout: 10_000 }, async () => {
    const send = (method: string, params?: unknown) => clientConnection.sendRequest(method, params);
    await assert.rejects(send('vramRelay/configure', { ...VALID_SETTINGS, device: 'gpu9000' }), isRpcError(-32602, /params\.device must be one of 'auto', 'simulated'/));
    await assert.rejects(
      send('vramRelay/configure', { ...VALID_SETTINGS, llm: { ...VALID_SETTINGS.llm, cpuWhileImageRuns: 'yes' } }),
      isRpcError(-32602, /params\.llm\.cpuWhileImageRuns must be true or false/),
    );
    await assert.rejects(send('vramRelay/submitJob', { spec: { ...IMAGE_SPEC, width: -1 } }), isRpcError(-32602, /params\.spec\.width must be a positive integer/));
    await assert.rejects(send('vramRelay/submitJob', { spec: { kind: 'video' } }), isRpcError(-32602, /spec\.kind must be 'image' or 'llm'/));
    await assert.rejects(send('vramRelay/setLlmState', { state: 'lukewarm' }), isRpcError(-32602, /params\.state must be one of 'hot', 'warm', 'cold', 'stopped'/));
    await assert.rejects(send('vramRelay/cancelJob', 'job-1'), isRpcError(-32602, /params must be an object/));
    await assert.rejects(clientConnection.sendRequest('vramRelay/cancelJob', 'a', 'b'), isRpcError(-32602, /by name/));
    assert.deepEqual(api.calls, []);
  });

  it('answers an unknown method with MethodNotFound', { timeout: 10_000 }, async () => {
    await assert.rejects(clientConnection.sendRequest('vramRelay/launchRockets', {}), isRpcError(-32601));
  });

  it("turns the service's errors into RequestFailed with the service's message", { timeout: 10_000 }, async () => {
    await assert.rejects(client.previewPlan({ spec: IMAGE_SPEC }), isRpcError(-32803, /^No model at \/models\/missing\.gguf: check the image model path setting\.$/));
  });

  it('forwards notifications until disposed', { timeout: 10_000 }, async () => {
    const seen: string[] = [];
    client.onNotification((method) => seen.push(method));
    api.emit(SnapshotNotification, FAKE_SNAPSHOT);
    api.emit(JobDoneNotification, { job: { id: 'job-1' } });
    await until(() => seen.length === 2, 5000, 'two notifications');
    assert.deepEqual(seen, [SnapshotNotification, JobDoneNotification]);
    binding.dispose();
    assert.equal(api.listenerCount(), 0);
  });

  it('cancels the service-side wait when the client aborts waitJob', { timeout: 10_000 }, async () => {
    const controller = new AbortController();
    const waiting = client.waitJob({ jobId: 'job-1' }, controller.signal);
    await until(() => api.waitSignals.length === 1, 5000, 'waitJob call');
    controller.abort(new Error('user closed the panel'));
    await assert.rejects(waiting, /user closed the panel/);
    await until(() => api.waitSignals[0]?.aborted === true, 5000, 'abort on the service side');
  });

  it('aborts the waits in flight when the binding is disposed (the client went away)', { timeout: 10_000 }, async () => {
    const waiting = client.waitJob({ jobId: 'job-1' });
    await until(() => api.waitSignals.length === 1, 5000, 'waitJob call');
    binding.dispose();
    await assert.rejects(waiting, isRpcError(-32800, /cancelled/));
    assert.equal(api.waitSignals[0]?.aborted, true);
  });
});

/// <reference types="node" />
/**
 * The comm logic of one kernel against a fake kernel: what a kernel with
 * and without kernelkit does, restarts, stop routing and its fallback.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { KernelLink } from '../link.js';
import type { ICommHandlers, ICommPort, IKernelPort, ITimers } from '../link.js';
import { isTraining, isVisible } from '../model.js';

class FakeComm implements ICommPort {
  constructor(readonly handlers: ICommHandlers) {}
  isOpen = true;
  sent: Record<string, unknown>[] = [];
  send(data: Record<string, unknown>): void {
    this.sent.push(data);
  }
  /** The kernel sends a message on this comm. */
  receive(data: unknown): void {
    this.handlers.onMessage(data);
  }
  /** The kernel closes this comm. */
  closeFromKernel(): void {
    this.isOpen = false;
    this.handlers.onClose();
  }
}

class FakeKernel implements IKernelPort {
  target: ((comm: ICommPort, data: unknown) => ICommHandlers) | null = null;
  opened: { data: Record<string, unknown>; comm: FakeComm }[] = [];
  interrupts = 0;

  listen(accept: (comm: ICommPort, data: unknown) => ICommHandlers): () => void {
    this.target = accept;
    return () => {
      this.target = null;
    };
  }
  open(data: Record<string, unknown>, handlers: ICommHandlers): ICommPort {
    const comm = new FakeComm(handlers);
    this.opened.push({ data, comm });
    return comm;
  }
  async interrupt(): Promise<void> {
    this.interrupts += 1;
  }
  /** `%load_ext kernelkit`: the kernel opens a comm carrying its hello. */
  kernelOpens(data: unknown): FakeComm {
    assert.ok(this.target, 'no comm target registered');
    let comm: FakeComm | null = null;
    const port: ICommPort = {
      get isOpen() {
        return comm?.isOpen ?? true;
      },
      send: d => comm?.send(d)
    };
    const handlers = this.target(port, data);
    comm = new FakeComm(handlers);
    return comm;
  }
}

class FakeTimers implements ITimers {
  pending = new Map<number, () => void>();
  private next = 1;
  set(callback: () => void): unknown {
    const id = this.next++;
    this.pending.set(id, callback);
    return id;
  }
  clear(handle: unknown): void {
    this.pending.delete(handle as number);
  }
  fireAll(): void {
    const callbacks = [...this.pending.values()];
    this.pending.clear();
    callbacks.forEach(cb => cb());
  }
}

const hello = (stop: 'subshell' | 'interrupt' = 'subshell') => ({
  type: 'hello',
  protocol: 1,
  version: '0.1.0',
  device: null,
  stop
});

const status = (running: boolean) => ({
  type: 'status',
  running,
  model: 'mlp',
  epoch: 1,
  epochs: 5,
  step: 3,
  steps: 10,
  logs: { loss: 0.5 },
  end: running ? null : { state: 'stopped_by_user', reason: 'stopped by user' }
});

function setup() {
  const kernel = new FakeKernel();
  const timers = new FakeTimers();
  const warnings: string[] = [];
  const link = new KernelLink(kernel, {
    timers,
    logger: { warn: message => warnings.push(message) },
    stopTimeoutMs: 1000
  });
  return { kernel, timers, warnings, link };
}

test('a kernel without kernelkit closes our comm and nothing shows', () => {
  const { kernel, link } = setup();
  link.connect();
  assert.equal(kernel.opened.length, 1);
  assert.deepEqual(kernel.opened[0].data, { type: 'hello', protocol: 1 });
  kernel.opened[0].comm.closeFromKernel();
  assert.equal(link.state.loaded, false);
  assert.equal(isVisible(link.state), false);
});

test('a kernel with kernelkit answers our comm with hello', () => {
  const { kernel, link } = setup();
  const seen: boolean[] = [];
  link.onChange(state => seen.push(state.loaded));
  link.connect();
  kernel.opened[0].comm.receive(hello());
  assert.equal(link.state.loaded, true);
  assert.deepEqual(seen, [true]);
  // An open comm is reused: connect() does not open another.
  link.connect();
  assert.equal(kernel.opened.length, 1);
});

test('%load_ext kernelkit: the kernel opens the comm and the item appears', () => {
  const { kernel, link } = setup();
  kernel.kernelOpens(hello('interrupt'));
  assert.equal(link.state.loaded, true);
  assert.equal(link.state.stop, 'interrupt');
  assert.equal(isVisible(link.state), true);
});

test('device and status messages update the state; bad ones are logged and ignored', () => {
  const { kernel, link, warnings } = setup();
  const comm = kernel.kernelOpens(hello());
  comm.receive({ type: 'device', device: 'CPU' });
  comm.receive(status(true));
  assert.equal(link.state.device, 'CPU');
  assert.equal(isTraining(link.state), true);
  const before = link.state;
  comm.receive({ type: 'execute', code: 'rm -rf /' });
  comm.receive({ type: 'status', running: 'yes' });
  assert.equal(link.state, before);
  assert.equal(warnings.length, 2);
  assert.match(warnings[0], /unknown message type "execute"/);
});

test('status before hello is ignored (kernelkit not confirmed)', () => {
  const { kernel, link } = setup();
  link.connect();
  kernel.opened[0].comm.receive(status(true));
  assert.equal(isTraining(link.state), false);
});

test('a protocol mismatch shows a notice and ignores other messages', () => {
  const { kernel, link } = setup();
  const comm = kernel.kernelOpens({ type: 'hello', protocol: 2, version: '1.0.0' });
  assert.deepEqual(link.state.mismatch, { protocol: 2, version: '1.0.0' });
  assert.equal(link.state.loaded, false);
  assert.equal(isVisible(link.state), true);
  comm.receive(status(true));
  assert.equal(isTraining(link.state), false);
});

test('restart forgets kernelkit', () => {
  const { kernel, link } = setup();
  const comm = kernel.kernelOpens(hello());
  comm.receive(status(true));
  link.reset();
  assert.equal(link.state.loaded, false);
  assert.equal(link.comms.length, 0);
  // After a restart the link may ask again.
  link.connect();
  assert.equal(kernel.opened.length, 1);
});

test('closing the last comm (unload) hides the item', () => {
  const { kernel, link } = setup();
  const comm = kernel.kernelOpens(hello());
  comm.closeFromKernel();
  assert.equal(link.state.loaded, false);
});

test('stop: nothing to do when no fit runs', async () => {
  const { kernel, link } = setup();
  kernel.kernelOpens(hello());
  assert.equal(await link.stop(), 'none');
  assert.equal(kernel.interrupts, 0);
});

test('stop over the subshell sends {"type":"stop"} and an ack cancels the fallback', async () => {
  const { kernel, link, timers } = setup();
  const comm = kernel.kernelOpens(hello('subshell'));
  comm.receive(status(true));
  assert.equal(await link.stop(), 'message');
  assert.deepEqual(comm.sent, [{ type: 'stop' }]);
  comm.receive({ type: 'stop_ack', accepted: true });
  timers.fireAll();
  assert.equal(kernel.interrupts, 0);
});

test('stop falls back to an interrupt when the kernel does not answer', async () => {
  const { kernel, link, timers, warnings } = setup();
  const comm = kernel.kernelOpens(hello('subshell'));
  comm.receive(status(true));
  await link.stop();
  timers.fireAll();
  assert.equal(kernel.interrupts, 1);
  assert.match(warnings[0], /interrupting/);
});

test('no fallback interrupt once the fit has ended', async () => {
  const { kernel, link, timers } = setup();
  const comm = kernel.kernelOpens(hello('subshell'));
  comm.receive(status(true));
  await link.stop();
  comm.receive(status(false));
  timers.fireAll();
  assert.equal(kernel.interrupts, 0);
  assert.equal(link.state.fit?.end?.state, 'stopped_by_user');
});

test('stop interrupts the kernel when it cannot handle messages while busy', async () => {
  const { kernel, link } = setup();
  const comm = kernel.kernelOpens(hello('interrupt'));
  comm.receive(status(true));
  assert.equal(await link.stop(), 'interrupt');
  assert.equal(comm.sent.length, 0);
  assert.equal(kernel.interrupts, 1);
});

test('dispose stops listening', () => {
  const { kernel, link } = setup();
  link.dispose();
  assert.equal(kernel.target, null);
  link.connect();
  assert.equal(kernel.opened.length, 0);
});

/**
 * One kernel's link to kernelkit: the comms, the state, and stop requests.
 *
 * The kernel is reached through a small port (IKernelPort) that index.ts
 * adapts from JupyterLab's KernelConnection, so this logic is unit-tested
 * under Node with a fake kernel.
 */

import { INITIAL_STATE, isTraining, reduce } from './model.js';
import type { IKernelKitState } from './model.js';
import { openMessage, parseKernelMessage, stopMessage } from './protocol.js';

/** An open comm, as the link uses it. */
export interface ICommPort {
  /** False once closed by either side or dropped by a kernel reconnect. */
  readonly isOpen: boolean;
  send(data: Record<string, unknown>): void;
}

/** What the link does with the messages of one comm. */
export interface ICommHandlers {
  onMessage(data: unknown): void;
  onClose(): void;
}

/** The kernel, as the link uses it. */
export interface IKernelPort {
  /**
   * Calls `accept` for every comm the kernel opens to target "kernelkit",
   * with the comm_open data; returns a function that stops listening.
   */
  listen(accept: (comm: ICommPort, data: unknown) => ICommHandlers): () => void;
  /** Opens a comm to the kernel's "kernelkit" target. */
  open(data: Record<string, unknown>, handlers: ICommHandlers): ICommPort;
  /** Interrupts the kernel (SIGINT). */
  interrupt(): Promise<void>;
}

/** Where warnings go (console in the browser, a list in tests). */
export interface ILogger {
  warn(message: string, data?: unknown): void;
}

/** Timers, injectable for tests. */
export interface ITimers {
  set(callback: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

/** How `stop()` asked the kernel to stop. */
export type StopRoute = 'message' | 'interrupt' | 'none';

export interface ILinkOptions {
  logger?: ILogger;
  timers?: ITimers;
  /** How long to wait for a stop_ack before interrupting (ms). */
  stopTimeoutMs?: number;
}

const defaultTimers: ITimers = {
  set: (callback, ms) => setTimeout(callback, ms),
  clear: handle => clearTimeout(handle as ReturnType<typeof setTimeout>)
};

/** The link between the extension and kernelkit in one kernel. */
export class KernelLink {
  constructor(port: IKernelPort, options: ILinkOptions = {}) {
    this._port = port;
    this._logger = options.logger ?? console;
    this._timers = options.timers ?? defaultTimers;
    this._stopTimeoutMs = options.stopTimeoutMs ?? 5000;
    this._unlisten = port.listen((comm, data) => this._adopt(comm, data));
  }

  /** The current state. */
  get state(): IKernelKitState {
    return this._state;
  }

  /** The open comms (most recent last). */
  get comms(): readonly ICommPort[] {
    return this._comms.filter(comm => comm.isOpen);
  }

  /** Calls `listener` after every state change; returns an unsubscriber. */
  onChange(listener: (state: IKernelKitState) => void): () => void {
    this._listeners.add(listener);
    return () => this._listeners.delete(listener);
  }

  /**
   * Asks the kernel for kernelkit by opening a comm, unless one is open.
   *
   * A kernel with kernelkit answers hello; one without closes the comm and
   * the state stays "not loaded".
   */
  connect(): void {
    if (this._disposed || this.comms.length > 0) {
      return;
    }
    try {
      let comm: ICommPort | null = null;
      comm = this._port.open({ ...openMessage() }, this._handlers(() => comm));
      this._comms.push(comm);
    } catch (err) {
      this._logger.warn('kernelkit: could not open a comm to the kernel', err);
    }
  }

  /** Forgets everything (the kernel restarted or died). */
  reset(): void {
    this._comms = [];
    this._cancelStopTimer();
    this._set(INITIAL_STATE);
  }

  /**
   * Stops the running fit.
   *
   * Sends a stop message when the kernel handles it while busy (hello said
   * "subshell"), else interrupts the kernel; kernelkit turns the first
   * interrupt during a fit into a graceful stop. If a stop message is not
   * acknowledged in time, the kernel is interrupted too.
   */
  async stop(): Promise<StopRoute> {
    if (!isTraining(this._state)) {
      return 'none';
    }
    const comm = this.comms[this.comms.length - 1];
    if (this._state.stop === 'subshell' && comm) {
      try {
        comm.send({ ...stopMessage() });
        this._cancelStopTimer();
        this._stopTimer = this._timers.set(() => {
          this._stopTimer = null;
          if (isTraining(this._state)) {
            this._logger.warn('kernelkit: no answer to stop; interrupting the kernel');
            void this._port.interrupt();
          }
        }, this._stopTimeoutMs);
        return 'message';
      } catch (err) {
        this._logger.warn('kernelkit: sending stop failed; interrupting', err);
      }
    }
    await this._port.interrupt();
    return 'interrupt';
  }

  /** Stops listening; the link is unusable afterwards. */
  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._unlisten();
    this._cancelStopTimer();
    this._listeners.clear();
    this._comms = [];
  }

  private _adopt(comm: ICommPort, data: unknown): ICommHandlers {
    this._comms.push(comm);
    const handlers = this._handlers(() => comm);
    // The kernel's comm_open carries its hello.
    handlers.onMessage(data);
    return handlers;
  }

  private _handlers(comm: () => ICommPort | null): ICommHandlers {
    return {
      onMessage: data => this._receive(data),
      onClose: () => {
        const closed = comm();
        this._comms = this._comms.filter(c => c !== closed && c.isOpen);
        if (this._comms.length === 0 && this._state.loaded) {
          // kernelkit went away (%unload_ext kernelkit, or the kernel shut down).
          this._set(INITIAL_STATE);
        }
      }
    };
  }

  private _receive(data: unknown): void {
    const parsed = parseKernelMessage(data);
    if (parsed.kind === 'invalid') {
      this._logger.warn(`kernelkit: ignored a message: ${parsed.error}`, data);
      return;
    }
    if (parsed.kind === 'mismatch') {
      this._logger.warn(
        `kernelkit: the kernel speaks protocol v${parsed.protocol}; messages are ignored`
      );
    }
    if (parsed.kind === 'message' && parsed.message.type === 'stop_ack') {
      this._cancelStopTimer();
    }
    this._set(reduce(this._state, parsed));
    if (!isTraining(this._state)) {
      this._cancelStopTimer();
    }
  }

  private _cancelStopTimer(): void {
    if (this._stopTimer !== null) {
      this._timers.clear(this._stopTimer);
      this._stopTimer = null;
    }
  }

  private _set(state: IKernelKitState): void {
    if (state === this._state) {
      return;
    }
    this._state = state;
    for (const listener of [...this._listeners]) {
      listener(state);
    }
  }

  private _port: IKernelPort;
  private _logger: ILogger;
  private _timers: ITimers;
  private _stopTimeoutMs: number;
  private _unlisten: () => void;
  private _state: IKernelKitState = INITIAL_STATE;
  private _comms: ICommPort[] = [];
  private _listeners = new Set<(state: IKernelKitState) => void>();
  private _stopTimer: unknown = null;
  private _disposed = false;
}

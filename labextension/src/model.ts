/**
 * What the extension knows about one kernel, as a pure reducer over the
 * protocol's messages (no JupyterLab imports; unit-tested under Node).
 */

import type { IStatus, KernelMessage, Parsed, StopMode } from './protocol.js';

/** The extension's view of one kernel. */
export interface IKernelKitState {
  /** kernelkit is loaded in the kernel and speaks our protocol. */
  readonly loaded: boolean;
  /** kernelkit's version in the kernel. */
  readonly version: string | null;
  /** The device label ("CPU", "GPU: NVIDIA H100", "TPU (8 cores)"). */
  readonly device: string | null;
  /** How a stop request reaches a busy kernel. */
  readonly stop: StopMode;
  /** The kernel's protocol version when it is one we do not speak. */
  readonly mismatch: { protocol: number; version: string | null } | null;
  /** The latest fit snapshot, running or ended. */
  readonly fit: IStatus | null;
}

/** A kernel without kernelkit (or not yet heard from). */
export const INITIAL_STATE: IKernelKitState = Object.freeze({
  loaded: false,
  version: null,
  device: null,
  stop: 'interrupt',
  mismatch: null,
  fit: null
});

/**
 * Returns the state after a parsed kernel message.
 *
 * Invalid messages leave the state unchanged (the caller logs them). While
 * the kernel speaks another protocol version, only a new hello is heeded.
 */
export function reduce(
  state: IKernelKitState,
  parsed: Parsed<KernelMessage>
): IKernelKitState {
  if (parsed.kind === 'invalid') {
    return state;
  }
  if (parsed.kind === 'mismatch') {
    return {
      ...INITIAL_STATE,
      mismatch: { protocol: parsed.protocol, version: parsed.version }
    };
  }
  const message = parsed.message;
  if (message.type === 'hello') {
    return {
      ...state,
      loaded: true,
      version: message.version,
      device: message.device,
      stop: message.stop,
      mismatch: null
    };
  }
  if (!state.loaded) {
    return state;
  }
  switch (message.type) {
    case 'device':
      return { ...state, device: message.device };
    case 'status':
      return { ...state, fit: message };
    case 'stop_ack':
      return state;
  }
}

/** True while a kernelkit fit runs in the kernel. */
export function isTraining(state: IKernelKitState): boolean {
  return state.loaded && state.fit !== null && state.fit.running;
}

/** True when the status item has something to show. */
export function isVisible(state: IKernelKitState): boolean {
  return state.loaded || state.mismatch !== null;
}

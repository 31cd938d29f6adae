/**
 * kernelkit protocol v1: the messages exchanged over the "kernelkit" comm.
 *
 * docs/protocol.md is the reference; this module parses and validates what
 * arrives and builds what the extension sends. It imports nothing from
 * JupyterLab so it runs (and is tested) under plain Node.
 */

/** The protocol version this extension speaks. */
export const PROTOCOL_VERSION = 1;

/** The comm target name, used by both sides to open comms. */
export const COMM_TARGET = 'kernelkit';

/** How the kernel handles a stop request while a cell is busy. */
export type StopMode = 'subshell' | 'interrupt';

/** How a fit ended (kernelkit.events.EndState). */
export type EndState =
  | 'finished'
  | 'stopped_by_user'
  | 'stopped_by_callback'
  | 'failed';

/** A logged scalar: a number, or the name of a non-finite value. */
export type LogValue = number | 'nan' | 'inf' | '-inf';

/** Kernel -> frontend: kernelkit is loaded (sent on every new comm). */
export interface IHello {
  type: 'hello';
  protocol: number;
  version: string;
  device: string | null;
  stop: StopMode;
}

/** Kernel -> frontend: the kernel's device label changed. */
export interface IDevice {
  type: 'device';
  device: string | null;
}

/** How a fit ended, as carried by a `status` message. */
export interface IEnd {
  state: EndState;
  reason: string;
}

/** Kernel -> frontend: a snapshot of the current (or last) fit. */
export interface IStatus {
  type: 'status';
  running: boolean;
  model: string;
  /** 0-based epoch index, as in Keras. */
  epoch: number;
  /** Keras's `epochs` argument (last epoch index + 1). */
  epochs: number;
  /** Steps finished in the current epoch. */
  step: number;
  /** Steps per epoch, or null when Keras does not know it. */
  steps: number | null;
  logs: Record<string, LogValue>;
  /** How the fit ended; null while it runs. */
  end: IEnd | null;
}

/** Kernel -> frontend: the answer to a `stop` request. */
export interface IStopAck {
  type: 'stop_ack';
  /** True if a running fit will stop; false if nothing was running. */
  accepted: boolean;
}

/** Every v1 message the kernel sends. */
export type KernelMessage = IHello | IDevice | IStatus | IStopAck;

/** Frontend -> kernel: the data of a comm_open the frontend sends. */
export interface IOpen {
  type: 'hello';
  protocol: number;
}

/** Frontend -> kernel: stop the running fit gracefully. */
export interface IStop {
  type: 'stop';
}

/** Every v1 message the frontend sends. */
export type FrontendMessage = IOpen | IStop;

/**
 * The result of parsing: a valid message, a hello from a kernel that speaks
 * another protocol version, or an error (the message must be ignored).
 */
export type Parsed<T> =
  | { kind: 'message'; message: T }
  | { kind: 'mismatch'; protocol: number; version: string | null }
  | { kind: 'invalid'; error: string };

const END_STATES: ReadonlySet<string> = new Set([
  'finished',
  'stopped_by_user',
  'stopped_by_callback',
  'failed'
]);

const NON_FINITE: ReadonlySet<string> = new Set(['nan', 'inf', '-inf']);

type Obj = Record<string, unknown>;

function isObject(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isCount(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0;
}

function isNullableString(value: unknown): value is string | null {
  return value === null || typeof value === 'string';
}

function invalid<T>(error: string): Parsed<T> {
  return { kind: 'invalid', error };
}

function checkLogs(value: unknown): string | null {
  if (!isObject(value)) {
    return 'logs must be an object';
  }
  for (const [key, v] of Object.entries(value)) {
    const ok =
      (typeof v === 'number' && Number.isFinite(v)) ||
      (typeof v === 'string' && NON_FINITE.has(v));
    if (!ok) {
      return `logs.${key} must be a finite number or "nan", "inf", "-inf"`;
    }
  }
  return null;
}

function checkStatus(m: Obj): string | null {
  if (typeof m.running !== 'boolean') {
    return 'status.running must be a boolean';
  }
  if (typeof m.model !== 'string') {
    return 'status.model must be a string';
  }
  for (const key of ['epoch', 'epochs', 'step'] as const) {
    if (!isCount(m[key])) {
      return `status.${key} must be a non-negative integer`;
    }
  }
  if (m.steps !== null && !isCount(m.steps)) {
    return 'status.steps must be a non-negative integer or null';
  }
  const logsError = checkLogs(m.logs);
  if (logsError) {
    return `status.${logsError}`;
  }
  if (m.end === null) {
    return m.running ? null : 'status.end must be set when running is false';
  }
  if (!isObject(m.end)) {
    return 'status.end must be an object or null';
  }
  if (typeof m.end.state !== 'string' || !END_STATES.has(m.end.state)) {
    return `status.end.state must be one of ${[...END_STATES].join(', ')}`;
  }
  if (typeof m.end.reason !== 'string') {
    return 'status.end.reason must be a string';
  }
  return m.running ? 'status.end must be null while running' : null;
}

/**
 * Parses the data of a comm message (or comm_open) sent by the kernel.
 *
 * A hello whose `protocol` differs from PROTOCOL_VERSION gives
 * `{kind: 'mismatch'}` so the UI can say so; anything malformed or unknown
 * gives `{kind: 'invalid'}` and must be ignored.
 */
export function parseKernelMessage(data: unknown): Parsed<KernelMessage> {
  if (!isObject(data)) {
    return invalid('message must be a JSON object');
  }
  switch (data.type) {
    case 'hello': {
      if (!isCount(data.protocol)) {
        return invalid('hello.protocol must be a non-negative integer');
      }
      if (data.protocol !== PROTOCOL_VERSION) {
        const version = typeof data.version === 'string' ? data.version : null;
        return { kind: 'mismatch', protocol: data.protocol, version };
      }
      if (typeof data.version !== 'string') {
        return invalid('hello.version must be a string');
      }
      if (!isNullableString(data.device)) {
        return invalid('hello.device must be a string or null');
      }
      if (data.stop !== 'subshell' && data.stop !== 'interrupt') {
        return invalid('hello.stop must be "subshell" or "interrupt"');
      }
      return {
        kind: 'message',
        message: {
          type: 'hello',
          protocol: data.protocol,
          version: data.version,
          device: data.device,
          stop: data.stop
        }
      };
    }
    case 'device':
      if (!isNullableString(data.device)) {
        return invalid('device.device must be a string or null');
      }
      return { kind: 'message', message: { type: 'device', device: data.device } };
    case 'status': {
      const error = checkStatus(data);
      if (error) {
        return invalid(error);
      }
      const end = data.end as IEnd | null;
      return {
        kind: 'message',
        message: {
          type: 'status',
          running: data.running as boolean,
          model: data.model as string,
          epoch: data.epoch as number,
          epochs: data.epochs as number,
          step: data.step as number,
          steps: data.steps as number | null,
          logs: { ...(data.logs as Record<string, LogValue>) },
          end: end === null ? null : { state: end.state, reason: end.reason }
        }
      };
    }
    case 'stop_ack':
      if (typeof data.accepted !== 'boolean') {
        return invalid('stop_ack.accepted must be a boolean');
      }
      return {
        kind: 'message',
        message: { type: 'stop_ack', accepted: data.accepted }
      };
    default:
      return invalid(`unknown message type ${JSON.stringify(data.type)}`);
  }
}

/**
 * Parses a message the frontend sends; the kernel applies the same rules
 * (kernelkit/transport/labcomm.py). Used by the tests that pin both sides to
 * the shared examples.
 */
export function parseFrontendMessage(data: unknown): Parsed<FrontendMessage> {
  if (!isObject(data)) {
    return invalid('message must be a JSON object');
  }
  switch (data.type) {
    case 'hello':
      if (!isCount(data.protocol)) {
        return invalid('hello.protocol must be a non-negative integer');
      }
      return {
        kind: 'message',
        message: { type: 'hello', protocol: data.protocol }
      };
    case 'stop':
      return { kind: 'message', message: { type: 'stop' } };
    default:
      return invalid(`unknown message type ${JSON.stringify(data.type)}`);
  }
}

/** The data of the comm_open the frontend sends to target "kernelkit". */
export function openMessage(): IOpen {
  return { type: 'hello', protocol: PROTOCOL_VERSION };
}

/** The stop request. */
export function stopMessage(): IStop {
  return { type: 'stop' };
}

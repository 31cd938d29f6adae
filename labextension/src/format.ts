/**
 * The status item's text, as pure functions of the kernel state
 * (the split of jupyterlab-execute-time's formatters.ts).
 */

import { PROTOCOL_VERSION } from './protocol.js';
import type { EndState, IStatus, LogValue } from './protocol.js';
import type { IKernelKitState } from './model.js';
import { isTraining } from './model.js';

const SEP = ' · ';

const END_TEXT: Record<EndState, string> = {
  finished: 'finished',
  stopped_by_user: 'stopped by user',
  stopped_by_callback: 'stopped by a callback',
  failed: 'failed'
};

/**
 * Formats a logged value for a narrow status bar: four significant digits,
 * scientific notation outside [1e-3, 1e4), non-finite values by name.
 */
export function formatValue(value: LogValue): string {
  if (typeof value === 'string') {
    return value;
  }
  const abs = Math.abs(value);
  if (abs !== 0 && (abs < 1e-3 || abs >= 1e4)) {
    return value.toExponential(2);
  }
  // toPrecision pads with zeros ("0.5000"); Number() drops them again.
  return String(Number(value.toPrecision(4)));
}

/** Percent of the epoch done (0-100, floored), or null when steps is unknown. */
export function stepPercent(step: number, steps: number | null): number | null {
  if (steps === null || steps <= 0) {
    return null;
  }
  return Math.max(0, Math.min(100, Math.floor((100 * step) / steps)));
}

/** "epoch 3/50 · 42% · loss 0.0123" for a fit snapshot. */
export function progressText(fit: IStatus): string {
  const parts = [`epoch ${Math.min(fit.epoch + 1, fit.epochs)}/${fit.epochs}`];
  const percent = stepPercent(fit.step, fit.steps);
  parts.push(percent === null ? `step ${fit.step}` : `${percent}%`);
  const loss = fit.logs['loss'];
  if (loss !== undefined) {
    parts.push(`loss ${formatValue(loss)}`);
  }
  return parts.join(SEP);
}

/** The one-line notice shown when the kernel speaks another protocol. */
export function mismatchText(protocol: number, version: string | null): string {
  const kernel = version ? `kernelkit ${version}` : 'the kernel';
  return (
    `kernelkit: ${kernel} speaks protocol v${protocol}, this extension ` +
    `v${PROTOCOL_VERSION}; install matching versions`
  );
}

/**
 * The status item's text: "kernelkit · <device> · idle", or the model and
 * its progress while a fit runs; empty for a kernel without kernelkit.
 */
export function statusText(state: IKernelKitState): string {
  if (state.mismatch) {
    return mismatchText(state.mismatch.protocol, state.mismatch.version);
  }
  if (!state.loaded) {
    return '';
  }
  const parts = ['kernelkit'];
  if (state.device) {
    parts.push(state.device);
  }
  if (isTraining(state) && state.fit) {
    if (state.fit.model) {
      parts.push(state.fit.model);
    }
    parts.push(progressText(state.fit));
  } else {
    parts.push('idle');
  }
  return parts.join(SEP);
}

/** The status item's tooltip: version, stop mode and the last fit's outcome. */
export function statusTitle(state: IKernelKitState): string {
  if (state.mismatch) {
    return 'Upgrade kernelkit (pip) or this JupyterLab extension so both speak the same protocol.';
  }
  if (!state.loaded) {
    return '';
  }
  const lines = [
    state.version ? `kernelkit ${state.version} in this kernel` : 'kernelkit in this kernel'
  ];
  lines.push(`Device: ${state.device ?? 'not detected yet'}`);
  const fit = state.fit;
  if (fit && fit.running) {
    lines.push(`Training ${fit.model || 'a model'}: ${progressText(fit)}`);
    lines.push(
      state.stop === 'subshell'
        ? 'Stop training stops it gracefully at the end of the current step.'
        : 'Stop training interrupts the kernel (graceful stop at the end of the step).'
    );
  } else if (fit && fit.end) {
    const reason =
      fit.end.reason && fit.end.reason !== END_TEXT[fit.end.state]
        ? ` (${fit.end.reason})`
        : '';
    lines.push(
      `Last fit: ${fit.model || 'model'} ${END_TEXT[fit.end.state]}${reason}, ` +
        `epoch ${Math.min(fit.epoch + 1, fit.epochs)}/${fit.epochs}`
    );
  } else {
    lines.push('Idle');
  }
  return lines.join('\n');
}

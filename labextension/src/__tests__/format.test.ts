/// <reference types="node" />
import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  formatValue,
  mismatchText,
  progressText,
  statusText,
  statusTitle,
  stepPercent
} from '../format.js';
import { INITIAL_STATE } from '../model.js';
import type { IKernelKitState } from '../model.js';
import type { IStatus } from '../protocol.js';

const running: IStatus = {
  type: 'status',
  running: true,
  model: 'mlp',
  epoch: 2,
  epochs: 50,
  step: 1050,
  steps: 2500,
  logs: { loss: 0.08341234 },
  end: null
};

const loaded: IKernelKitState = {
  ...INITIAL_STATE,
  loaded: true,
  version: '0.1.0',
  device: 'CPU',
  stop: 'subshell'
};

test('formatValue keeps four significant digits and names non-finite values', () => {
  assert.equal(formatValue(0.08341234), '0.08341');
  assert.equal(formatValue(0.5), '0.5');
  assert.equal(formatValue(12.3456), '12.35');
  assert.equal(formatValue(0), '0');
  assert.equal(formatValue(123456), '1.23e+5');
  assert.equal(formatValue(0.00001234), '1.23e-5');
  assert.equal(formatValue('nan'), 'nan');
  assert.equal(formatValue('-inf'), '-inf');
});

test('stepPercent floors, clamps and knows when steps are unknown', () => {
  assert.equal(stepPercent(1050, 2500), 42);
  assert.equal(stepPercent(2500, 2500), 100);
  assert.equal(stepPercent(3000, 2500), 100);
  assert.equal(stepPercent(5, null), null);
  assert.equal(stepPercent(5, 0), null);
});

test('progressText shows the 1-based epoch, the percentage and the loss', () => {
  assert.equal(progressText(running), 'epoch 3/50 · 42% · loss 0.08341');
  assert.equal(
    progressText({ ...running, steps: null, step: 7, logs: {} }),
    'epoch 3/50 · step 7'
  );
});

test('statusText: nothing without kernelkit', () => {
  assert.equal(statusText(INITIAL_STATE), '');
  assert.equal(statusTitle(INITIAL_STATE), '');
});

test('statusText: name and idle, with the device once known', () => {
  assert.equal(statusText({ ...loaded, device: null }), 'kernelkit · idle');
  assert.equal(statusText(loaded), 'kernelkit · CPU · idle');
});

test('statusText: model and progress while a fit runs, idle text after', () => {
  assert.equal(
    statusText({ ...loaded, fit: running }),
    'kernelkit · CPU · mlp · epoch 3/50 · 42% · loss 0.08341'
  );
  const ended: IStatus = {
    ...running,
    running: false,
    end: { state: 'stopped_by_user', reason: 'stopped by user' }
  };
  assert.equal(statusText({ ...loaded, fit: ended }), 'kernelkit · CPU · idle');
  assert.match(statusTitle({ ...loaded, fit: ended }), /Last fit: mlp stopped by user, epoch 3\/50/);
});

test('the title says how stop works', () => {
  assert.match(statusTitle({ ...loaded, fit: running }), /gracefully/);
  assert.match(
    statusTitle({ ...loaded, stop: 'interrupt', fit: running }),
    /interrupts the kernel/
  );
});

test('a protocol mismatch is one line naming both versions', () => {
  const text = statusText({ ...INITIAL_STATE, mismatch: { protocol: 2, version: '1.0.0' } });
  assert.equal(text, mismatchText(2, '1.0.0'));
  assert.match(text, /v2/);
  assert.match(text, /v1/);
  assert.ok(!text.includes('\n'));
});

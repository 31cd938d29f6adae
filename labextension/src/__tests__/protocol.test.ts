/// <reference types="node" />
/**
 * The shared examples (protocol-examples.json, also read by
 * tests/test_protocol.py) pin what the extension accepts.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import {
  COMM_TARGET,
  PROTOCOL_VERSION,
  openMessage,
  parseFrontendMessage,
  parseKernelMessage,
  stopMessage
} from '../protocol.js';

interface IExample {
  name: string;
  message: unknown;
}

interface IExamples {
  protocol: number;
  kernel_to_frontend: { valid: IExample[]; mismatch: IExample[]; invalid: IExample[] };
  frontend_to_kernel: { valid: IExample[]; invalid: IExample[] };
  from_events: IExample[];
}

// Compiled to lib/__tests__/; the JSON stays in src/__tests__/.
const examples = JSON.parse(
  readFileSync(new URL('../../src/__tests__/protocol-examples.json', import.meta.url), 'utf8')
) as IExamples;

test('the examples are for this protocol version', () => {
  assert.equal(examples.protocol, PROTOCOL_VERSION);
  assert.equal(COMM_TARGET, 'kernelkit');
});

test('valid kernel messages parse', () => {
  for (const { name, message } of examples.kernel_to_frontend.valid) {
    const parsed = parseKernelMessage(message);
    assert.equal(parsed.kind, 'message', `${name}: ${JSON.stringify(parsed)}`);
  }
});

test('messages the kernel builds from events parse', () => {
  for (const { name, message } of examples.from_events) {
    const parsed = parseKernelMessage(message);
    assert.equal(parsed.kind, 'message', `${name}: ${JSON.stringify(parsed)}`);
  }
});

test('parsing keeps the known fields and drops the others', () => {
  const parsed = parseKernelMessage({
    type: 'hello',
    protocol: 1,
    version: '0.2.0',
    device: 'CPU',
    stop: 'subshell',
    extra: [1]
  });
  assert.deepEqual(parsed, {
    kind: 'message',
    message: { type: 'hello', protocol: 1, version: '0.2.0', device: 'CPU', stop: 'subshell' }
  });
});

test('a hello from another protocol version is a mismatch, not an error', () => {
  for (const { name, message } of examples.kernel_to_frontend.mismatch) {
    const parsed = parseKernelMessage(message);
    assert.equal(parsed.kind, 'mismatch', name);
    assert.ok(parsed.kind === 'mismatch' && parsed.protocol !== PROTOCOL_VERSION);
  }
});

test('malformed or unknown kernel messages are rejected with a reason', () => {
  for (const { name, message } of examples.kernel_to_frontend.invalid) {
    const parsed = parseKernelMessage(message);
    assert.equal(parsed.kind, 'invalid', `${name} was accepted`);
    assert.ok(parsed.kind === 'invalid' && parsed.error.length > 0);
  }
});

test('frontend messages: what we send is valid, and the rules match the kernel', () => {
  assert.equal(parseFrontendMessage(openMessage()).kind, 'message');
  assert.equal(parseFrontendMessage(stopMessage()).kind, 'message');
  assert.deepEqual(openMessage(), { type: 'hello', protocol: PROTOCOL_VERSION });
  assert.deepEqual(stopMessage(), { type: 'stop' });
  for (const { name, message } of examples.frontend_to_kernel.valid) {
    assert.equal(parseFrontendMessage(message).kind, 'message', name);
  }
  for (const { name, message } of examples.frontend_to_kernel.invalid) {
    assert.equal(parseFrontendMessage(message).kind, 'invalid', name);
  }
});

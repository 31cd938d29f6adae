/// <reference types="node" />
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { cellMagicRange } from '../magic.js';

test('finds a %%kmodel first line', () => {
  const text = '%%kmodel mlp --epochs 3\nx = 1\n';
  assert.deepEqual(cellMagicRange(text), { from: 0, to: 23 });
  assert.deepEqual(cellMagicRange('%%kmodel'), { from: 0, to: 8 });
});

test('ignores other magics, later lines and look-alikes', () => {
  assert.equal(cellMagicRange('%%time\nx = 1'), null);
  assert.equal(cellMagicRange('%%kmodels\n'), null);
  assert.equal(cellMagicRange('%kmodel show\n'), null);
  assert.equal(cellMagicRange('x = 1\n%%kmodel m\n'), null);
  assert.equal(cellMagicRange(''), null);
});

import assert from 'node:assert/strict';
import { decodeReference, encodeReference, VmStateReference, VmStateReferenceError } from '../../../plugin/vmstate-reference';

describe('vmstate reference codec', () => {
  const digest = Uint8Array.from({ length: 32 }, (_, i) => i * 7);

  it('round-trips a session reference in a few dozen bytes', () => {
    const ref: VmStateReference = { kind: 'session', sessionId: '0123456789abcdef', finalVersion: 2 ** 47 + 5, digest };
    const blob = encodeReference(ref);
    assert.equal(blob.length, 4 + 2 + 2 + 16 + 6 + 1 + 32);
    assert.deepEqual(decodeReference(blob), ref);
  });

  it('round-trips "no state" and a reference held at an offset of a larger buffer', () => {
    assert.deepEqual(decodeReference(encodeReference({ kind: 'none' })), { kind: 'none' });
    const blob = encodeReference({ kind: 'session', sessionId: 's', finalVersion: 0, digest: new Uint8Array(0) });
    const big = new Uint8Array(blob.length + 10);
    big.set(blob, 5);
    assert.deepEqual(decodeReference(big.subarray(5, 5 + blob.length)), { kind: 'session', sessionId: 's', finalVersion: 0, digest: new Uint8Array(0) });
  });

  const good = encodeReference({ kind: 'session', sessionId: 'abcd', finalVersion: 42, digest });
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ['empty', new Uint8Array(0), /not a ctmigrate reference/],
    ['another magic', Uint8Array.from([0x51, 0x45, 0x56, 0x4d, 1, 1, 0, 0]), /not a ctmigrate reference/],
    ['another format', Uint8Array.from([...good.subarray(0, 4), 2, ...good.subarray(5)]), /unsupported reference format 2/],
    ['an unknown kind', Uint8Array.from([...good.subarray(0, 5), 9, ...good.subarray(6)]), /malformed/],
    ['"none" with trailing bytes', Uint8Array.from([...encodeReference({ kind: 'none' }), 0]), /trailing bytes/],
    ['a session header cut short', good.subarray(0, 7), /malformed/],
    ['an id longer than the blob', good.subarray(0, 12), /truncated/],
    ['a digest cut short', good.subarray(0, good.length - 1), /truncated or trailing/],
    ['trailing bytes after the digest', Uint8Array.from([...good, 0]), /truncated or trailing/],
  ];
  for (const [what, blob, message] of cases) {
    it(`refuses ${what} with a VmStateReferenceError`, () => {
      assert.throws(
        () => decodeReference(blob),
        (e: unknown) => e instanceof VmStateReferenceError && message.test(e.message) && e.message.startsWith('vmstate blob: '),
      );
    });
  }
});

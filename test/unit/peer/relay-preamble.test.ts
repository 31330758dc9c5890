import { strict as assert } from 'node:assert';
import { encodeRelayPreamble, RelayPreambleError, RelayPreambleReader } from '../../../adapters/peer/relay-preamble';

describe('relay preamble', () => {
  it('carries an IPv4 and an IPv6 target and keeps the bytes after it', () => {
    for (const target of [{ host: '198.51.100.2', port: 7471 }, { host: '2001:db8::2', port: 1 }]) {
      const r = new RelayPreambleReader();
      const wire = Buffer.concat([encodeRelayPreamble(target), Buffer.from([0x16, 0x03, 0x01])]);
      assert.equal(r.push(wire.subarray(0, 5)), null);
      const got = r.push(wire.subarray(5));
      assert.deepEqual(got?.target, target);
      assert.deepEqual([...(got?.rest ?? [])], [0x16, 0x03, 0x01]);
    }
  });

  it('refuses a TLS ClientHello or garbage at the first byte', () => {
    assert.throws(() => new RelayPreambleReader().push(Buffer.from([0x16, 0x03, 0x01])), RelayPreambleError);
  });

  it('refuses names, bad ports and endless lines', () => {
    assert.throws(() => new RelayPreambleReader().push(Buffer.from('CTMRELAY1 evil.example:22\n')), /not IP:PORT/);
    assert.throws(() => new RelayPreambleReader().push(Buffer.from('CTMRELAY1 192.0.2.1:70000\n')), /not IP:PORT/);
    assert.throws(() => new RelayPreambleReader().push(Buffer.from(`CTMRELAY1 ${'1'.repeat(200)}`)), /first 128 bytes/);
  });
});

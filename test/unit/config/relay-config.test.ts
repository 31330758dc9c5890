import assert from 'node:assert/strict';
import { applyConfigText, configuredRelays, defaultConfig, relayFor } from '../../../plugin/daemon-config';
import { PeerAuthorization } from '../../../plugin/peer-authorization';
import { daemonConfig } from '../../../adapters/cli/daemon-options';
import { relayConfig } from '../../../adapters/cli/relay-options';

describe('relays in the configuration (via, peer ... via, --relay)', () => {
  it('reads "peer = ADDR:PORT via RELAY:PORT" and "via = RELAY:PORT": one peer through its own relay, the others through the common one', () => {
    const c = defaultConfig();
    applyConfigText(c, 'peer = 198.51.100.2:7471 via 203.0.113.9:7472\npeer = 198.51.100.3\nvia = 203.0.113.8:7472\n', 'test.conf');
    assert.deepEqual(c.peers, [{ host: '198.51.100.2', port: 7471 }, { host: '198.51.100.3', port: 7471 }]);
    assert.deepEqual(relayFor(c, { host: '198.51.100.2', port: 7471 }), { host: '203.0.113.9', port: 7472 });
    assert.deepEqual(relayFor(c, { host: '198.51.100.3', port: 7471 }), { host: '203.0.113.8', port: 7472 });
    assert.deepEqual(configuredRelays(c).map((r) => r.host), ['203.0.113.8', '203.0.113.9']);
  });

  it('without any relay every peer is direct', () => {
    const c = defaultConfig();
    applyConfigText(c, 'peer = 198.51.100.2:7471\n', 'test.conf');
    assert.equal(relayFor(c, c.peers[0] as { host: string; port: number }), undefined);
  });

  it('refuses a malformed peer line or relay, naming the line', () => {
    assert.throws(() => applyConfigText(defaultConfig(), 'peer = 198.51.100.2:7471 through 203.0.113.9\n', 'x.conf'), /line 1 of x\.conf: peer must be ADDR:PORT or "ADDR:PORT via RELAY:PORT"/);
    assert.throws(() => applyConfigText(defaultConfig(), 'peer = 198.51.100.2:7471 via relay.example\n', 'x.conf'), /line 1 of x\.conf: relay "relay\.example": not an IP address/);
    assert.throws(() => applyConfigText(defaultConfig(), 'via = 203.0.113.9:99999\n', 'x.conf'), /via .*port must be 1-65535/);
  });

  it('--via on the command line applies to every peer', () => {
    const c = daemonConfig(['--config', '/dev/null', '--peer', '198.51.100.2:7471', '--via', '203.0.113.9:7472']);
    assert.deepEqual(relayFor(c, { host: '198.51.100.2', port: 7471 }), { host: '203.0.113.9', port: 7472 });
  });

  it('peer authorization lets in the configured relays (a peer behind one arrives from its address), nobody else', () => {
    const auth = new PeerAuthorization([{ host: '198.51.100.2', port: 7471 }], [{ host: '203.0.113.9', port: 7472 }]);
    assert.ok(auth.allows('198.51.100.2'));
    assert.ok(auth.allows('203.0.113.9'));
    assert.ok(auth.allows('::ffff:203.0.113.9'));
    assert.ok(!auth.allows('203.0.113.10'));
    assert.match(auth.refusal({ host: '203.0.113.10', port: 1 }), /relays: 203\.0\.113\.9:7472/);
  });

  it('ctmigrated --relay needs at least one allowed target, and defaults to port 7472', () => {
    assert.throws(() => relayConfig(['--relay']), /--relay needs at least one --relay-allow ADDR:PORT: a relay that forwards anywhere is an open proxy/);
    assert.deepEqual(relayConfig(['--relay', '--relay-allow', '198.51.100.1:7471']), { listen: { host: '0.0.0.0', port: 7472 }, allow: [{ host: '198.51.100.1', port: 7471 }] });
    assert.throws(() => relayConfig(['--relay', '--relay-allow', 'nope']), /--relay-allow "nope": not an IP address/);
  });
});

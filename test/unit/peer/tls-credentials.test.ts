import { strict as assert } from 'node:assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { certificateIdentities, CredentialError, identityKey, LIBVIRT_PKI, loadCredentials } from '../../../adapters/peer/tls-credentials';

describe('peer credentials', () => {
  let dir = '';
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'ctm-cred-'));
    writeFileSync(join(dir, 'psk'), 'cd'.repeat(32), { mode: 0o600 });
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('uses the pre-shared key file when given', () => {
    const c = loadCredentials({ pskFile: join(dir, 'psk') }, () => false);
    assert.equal(c.kind, 'psk');
  });

  it('refuses a key and certificates together', () => {
    assert.throws(() => loadCredentials({ pskFile: join(dir, 'psk'), tlsCert: 'a', tlsKey: 'b' }), /either --psk-file or --tls-cert/);
  });

  it('falls back to libvirt PKI paths, and says which were missing', () => {
    const seen: string[] = [];
    assert.throws(
      () =>
        loadCredentials({}, (p) => {
          seen.push(p);
          return false;
        }),
      (e: unknown) => e instanceof CredentialError && /no peer credentials: give --psk-file FILE/.test(e.message),
    );
    assert.ok(seen.includes(LIBVIRT_PKI.ca) && seen.includes(LIBVIRT_PKI.serverCert) && seen.includes(LIBVIRT_PKI.clientCert));
  });

  it('reads the libvirt files when they exist', () => {
    // The default paths exist (per `exists`) but cannot be read here: the error names the file.
    assert.throws(() => loadCredentials({}, () => true), new RegExp(`cannot read the CA certificate ${LIBVIRT_PKI.ca}`));
  });
});

describe('peer identities in certificates', () => {
  it('reads DNS names and IP addresses from subjectAltName, each in one spelling', () => {
    // As Node prints it: IPv6 written out, in upper case.
    assert.deepEqual(certificateIdentities('DNS:Host-B.Example, IP Address:2001:DB8:0:0:0:0:0:20, IP Address:192.0.2.1, URI:spiffe://x, email:a@b'), [
      'host-b.example',
      '2001:db8::20',
      '192.0.2.1',
    ]);
    assert.deepEqual(certificateIdentities(undefined), []);
  });

  it('spells an allowed name the same way, so any spelling of an address matches', () => {
    assert.equal(identityKey('2001:db8:0::20'), '2001:db8::20');
    assert.equal(identityKey('::ffff:198.51.100.2'), '198.51.100.2');
    assert.equal(identityKey('HOST-B.example'), 'host-b.example');
  });
});

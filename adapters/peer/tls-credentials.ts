import { existsSync, readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { ConnectionOptions, createSecureContext, SecureContext, TlsOptions } from 'node:tls';
import { formatAddress, isIpv4Mapped, parseAddress } from '../../plugin/address';
import { readPskFile } from './psk-key';

/**
 * How peers prove they belong to the cluster. Either everyone holds the
 * same pre-shared key, or everyone has a certificate from the cluster's CA
 * (libvirt's migration PKI, by default).
 */
export type PeerCredentials =
  | { kind: 'psk'; key: Buffer }
  | {
      kind: 'certificate';
      ca: Buffer;
      /** What this host presents when it accepts. */
      server: { cert: Buffer; key: Buffer };
      /** What this host presents when it dials. */
      client: { cert: Buffer; key: Buffer };
      /** Check that a dialled peer's certificate names the address dialled (default true). */
      checkPeerName?: boolean;
    };

/** The certificate files given on the command line, if any. */
export interface CredentialFiles {
  pskFile?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
}

/** libvirt's PKI layout (libvirtd's own TLS); a host set up for TLS migration has these. */
export const LIBVIRT_PKI = {
  ca: '/etc/pki/CA/cacert.pem',
  serverCert: '/etc/pki/libvirt/servercert.pem',
  serverKey: '/etc/pki/libvirt/private/serverkey.pem',
  clientCert: '/etc/pki/libvirt/clientcert.pem',
  clientKey: '/etc/pki/libvirt/private/clientkey.pem',
};

/** No usable credentials, or a file could not be read. */
export class CredentialError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CredentialError';
  }
}

/**
 * TLS 1.3 only. With a PSK, OpenSSL treats a key from the (legacy) PSK
 * callback as a SHA-256 key, so only SHA-256 suites can use it: with
 * TLS_AES_256_GCM_SHA384 alone the handshake fails (checked on Node 20 /
 * OpenSSL 3.0). The handshake still does an ECDHE exchange (psk_dhe_ke), so
 * sessions have forward secrecy.
 */
export const PSK_CIPHERS = 'TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256';
const PSK_IDENTITY = 'ctmigrate';

function readFile(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new CredentialError(`cannot read the ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
}

/**
 * Credentials from the flags: --psk-file wins; otherwise --tls-cert/--tls-key/
 * --tls-ca, each defaulting to libvirt's PKI files when they exist. `exists`
 * is for tests.
 */
export function loadCredentials(files: CredentialFiles, exists: (p: string) => boolean = existsSync): PeerCredentials {
  if (files.pskFile !== undefined) {
    if (files.tlsCert !== undefined || files.tlsKey !== undefined)
      throw new CredentialError('give either --psk-file or --tls-cert/--tls-key/--tls-ca, not both');
    return { kind: 'psk', key: readPskFile(files.pskFile) };
  }
  if ((files.tlsCert === undefined) !== (files.tlsKey === undefined))
    throw new CredentialError('--tls-cert and --tls-key go together');
  const ca = files.tlsCa ?? (exists(LIBVIRT_PKI.ca) ? LIBVIRT_PKI.ca : undefined);
  let server: { cert: string; key: string } | undefined;
  let client: { cert: string; key: string } | undefined;
  if (files.tlsCert !== undefined && files.tlsKey !== undefined) {
    server = client = { cert: files.tlsCert, key: files.tlsKey };
  } else {
    if (exists(LIBVIRT_PKI.serverCert) && exists(LIBVIRT_PKI.serverKey))
      server = { cert: LIBVIRT_PKI.serverCert, key: LIBVIRT_PKI.serverKey };
    if (exists(LIBVIRT_PKI.clientCert) && exists(LIBVIRT_PKI.clientKey))
      client = { cert: LIBVIRT_PKI.clientCert, key: LIBVIRT_PKI.clientKey };
  }
  if (ca === undefined || server === undefined || client === undefined)
    throw new CredentialError(
      `no peer credentials: give --psk-file FILE, or --tls-cert/--tls-key/--tls-ca (libvirt's ${LIBVIRT_PKI.ca}, ${LIBVIRT_PKI.serverCert} and ${LIBVIRT_PKI.clientCert} with their keys were not all found)`,
    );
  return {
    kind: 'certificate',
    ca: readFile(ca, 'CA certificate'),
    server: { cert: readFile(server.cert, 'certificate'), key: readFile(server.key, 'private key') },
    client: { cert: readFile(client.cert, 'certificate'), key: readFile(client.key, 'private key') },
  };
}

/** TLS options for the accepting side; peers without the key or a CA-signed certificate fail the handshake. */
export function serverTlsOptions(c: PeerCredentials): TlsOptions {
  if (c.kind === 'psk')
    return {
      minVersion: 'TLSv1.3',
      ciphers: PSK_CIPHERS,
      // Every identity gets the cluster key: the identity is not a secret and says nothing.
      pskCallback: () => c.key,
    };
  return {
    minVersion: 'TLSv1.3',
    ca: c.ca,
    cert: c.server.cert,
    key: c.server.key,
    requestCert: true,
    rejectUnauthorized: true,
  };
}

/**
 * The identities a certificate names: its subjectAltName DNS names and IP
 * addresses (Node gives them as "DNS:a, IP Address:192.0.2.1", IPv6
 * written out in upper case), each as identityKey() spells it. The CN is
 * not an identity: RFC 6125 and libvirt's own checks look at SANs.
 */
export function certificateIdentities(subjectaltname: string | undefined): string[] {
  if (!subjectaltname) return [];
  const out: string[] = [];
  for (const part of subjectaltname.split(/,\s*/)) {
    const m = /^(DNS|IP Address):(.+)$/.exec(part.trim());
    if (m) out.push(identityKey(m[2]));
  }
  return out;
}

/** One spelling per identity: DNS names in lower case, addresses compressed (IPv4-mapped ones as IPv4). */
export function identityKey(name: string): string {
  if (isIP(name) === 0) return name.toLowerCase();
  const a = parseAddress(name);
  const b = isIpv4Mapped(a.bytes) ? a.bytes.subarray(12) : a.bytes;
  return formatAddress(b, 0, b.length);
}

/** TLS options for the dialling side. */
export function clientTlsOptions(c: PeerCredentials, secureContext?: SecureContext): ConnectionOptions {
  const context = secureContext ?? clientSecureContext(c);
  if (c.kind === 'psk')
    return {
      secureContext: context,
      pskCallback: () => ({ psk: c.key, identity: PSK_IDENTITY }),
      // With a PSK there is no certificate; the key is the authentication.
      checkServerIdentity: () => undefined,
    };
  return {
    secureContext: context,
    rejectUnauthorized: true,
    ...(c.checkPeerName === false ? { checkServerIdentity: () => undefined } : {}),
  };
}

/**
 * The client side's OpenSSL context, built once per port: tls.connect()
 * without one builds a fresh SSL_CTX for every connection, native memory
 * that V8 frees only when it collects the wrapper. A daemon whose heap
 * barely grows collects rarely, so its RSS crept with every migration.
 */
export function clientSecureContext(c: PeerCredentials): SecureContext {
  if (c.kind === 'psk') return createSecureContext({ minVersion: 'TLSv1.3', ciphers: PSK_CIPHERS });
  return createSecureContext({ minVersion: 'TLSv1.3', ca: c.ca, cert: c.client.cert, key: c.client.key });
}

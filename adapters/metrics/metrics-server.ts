import { createServer, Server } from 'node:http';
import { PeerAddress, formatPeerAddress } from '../../plugin/ports/peer-port';

/** The exposition a scrape gets. */
export interface Exposition {
  text(): Promise<string>;
  readonly contentType: string;
}

/** The metrics endpoint could not be opened. */
export class MetricsServerError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MetricsServerError';
  }
}

/** A listening metrics endpoint. */
export interface MetricsServer {
  readonly address: PeerAddress;
  close(): Promise<void>;
}

/**
 * Serve `GET /metrics` (and HEAD) on `address`; every other path is 404,
 * other methods 405. A scrape never touches the kernel or the sessions'
 * locks: it reads counters, and asks live feeds for theirs.
 */
export function serveMetrics(address: PeerAddress, exposition: Exposition): Promise<MetricsServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics') {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found: metrics are at /metrics\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { Allow: 'GET, HEAD', 'Content-Type': 'text/plain' }).end('only GET\n');
      return;
    }
    exposition.text().then(
      (text) => res.writeHead(200, { 'Content-Type': exposition.contentType }).end(req.method === 'HEAD' ? undefined : text),
      (e: Error) => res.writeHead(500, { 'Content-Type': 'text/plain' }).end(`metrics unavailable: ${e.message}\n`),
    );
  });
  // Scrapers keep connections open; they must not hold the daemon's exit.
  server.keepAliveTimeout = 5000;
  return new Promise((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => reject(new MetricsServerError(`cannot serve metrics on ${formatPeerAddress(address)}: ${e.code ?? e.message}`)));
    server.listen(address.port, address.host, () => {
      const a = server.address();
      const bound = a && typeof a === 'object' ? { host: address.host, port: a.port } : address;
      resolve({
        address: bound,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}

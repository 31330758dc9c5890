// Busy TCP flows for the migration lab, run inside a lab namespace
// (`node flow-agent.js CMD ...`):
//
//   server ADDR PORT
//       echo every byte back on every connection; prints "ready PORT"
//   client SRC HOST PORT K [BREAK_MS]
//       open K connections from SRC to HOST:PORT; each sends a short line
//       every 50–100 ms and waits for its echo before sending the next.
//       Prints "ready K" once all are connected. Commands on stdin:
//         mark       forget the longest gaps seen so far (start of a window)
//         churn N    close N of the open flows (gracefully) and open N new
//         report     print "report {json}" (see FlowReport in flows.ts)
//
// A flow is broken when its socket fails or closes without being asked to,
// or when no echo comes back for BREAK_MS (default 5000): a hung TCP
// connection is what a user of a dropped flow sees.

import * as net from 'node:net';

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function fail(message: string): never {
  process.stderr.write(`flow-agent: ${message}\n`);
  process.exit(2);
}

function int(s: string | undefined, what: string, max = 65535): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0 || n > max) fail(`bad ${what} "${s}"`);
  return n;
}

function server(addr: string, port: number): void {
  const srv = net.createServer((c) => {
    c.setNoDelay(true);
    c.on('error', () => undefined);
    c.on('data', (d) => c.write(d));
  });
  srv.on('error', (e) => fail(`listen ${addr}:${port}: ${e.message}`));
  srv.listen({ host: addr, port, backlog: 4096 }, () => say(`ready ${(srv.address() as net.AddressInfo).port}`));
}

interface Flow {
  id: number;
  sock: net.Socket;
  connected: boolean;
  seq: number;
  /** When the outstanding line was sent; 0 when none is outstanding. */
  sentAt: number;
  lastEcho: number;
  /** Longest time between two echoes since the last mark (or since connecting). */
  maxGap: number;
  echoes: number;
  buffer: string;
  broken: string;
  /** Closed on purpose by churn: no longer counted. */
  closed: boolean;
  timer: NodeJS.Timeout | null;
}

function client(src: string, host: string, port: number, k: number, breakMs: number): void {
  const flows: Flow[] = [];
  let nextId = 0;
  let announced = false;

  const interval = (): number => 50 + Math.floor(Math.random() * 51);

  const breakFlow = (f: Flow, why: string): void => {
    if (f.broken || f.closed) return;
    f.broken = why;
    if (f.timer) clearTimeout(f.timer);
    f.timer = null;
  };

  const sendNext = (f: Flow): void => {
    f.timer = null;
    if (f.broken || f.closed) return;
    f.seq += 1;
    f.sentAt = Date.now();
    f.sock.write(`${f.id}:${f.seq}\n`);
  };

  const open = (): Promise<void> =>
    new Promise((resolve) => {
      const f: Flow = {
        id: nextId++,
        sock: net.connect({ host, port, localAddress: src }),
        connected: false,
        seq: 0,
        sentAt: 0,
        lastEcho: 0,
        maxGap: 0,
        echoes: 0,
        buffer: '',
        broken: '',
        closed: false,
        timer: null,
      };
      flows.push(f);
      f.sock.setNoDelay(true);
      f.sock.on('connect', () => {
        f.connected = true;
        f.lastEcho = Date.now();
        sendNext(f);
        resolve();
      });
      f.sock.on('data', (d: Buffer) => {
        f.buffer += d.toString('latin1');
        for (let i = f.buffer.indexOf('\n'); i >= 0; i = f.buffer.indexOf('\n')) {
          const line = f.buffer.slice(0, i);
          f.buffer = f.buffer.slice(i + 1);
          if (line !== `${f.id}:${f.seq}`) {
            breakFlow(f, `wrong echo "${line}"`);
            return;
          }
          const now = Date.now();
          f.maxGap = Math.max(f.maxGap, now - f.lastEcho);
          f.lastEcho = now;
          f.echoes += 1;
          f.sentAt = 0;
          if (!f.broken && !f.closed) f.timer = setTimeout(() => sendNext(f), interval());
        }
      });
      f.sock.on('error', (e: NodeJS.ErrnoException) => {
        breakFlow(f, e.code ?? e.message);
        resolve();
      });
      f.sock.on('close', () => {
        breakFlow(f, 'closed by peer');
        resolve();
      });
    });

  // A flow with no echo for BREAK_MS is hung: count it broken at once.
  setInterval(() => {
    const now = Date.now();
    for (const f of flows) if (f.connected && !f.broken && !f.closed && now - f.lastEcho > breakMs) breakFlow(f, `no echo for ${breakMs} ms`);
  }, 100).unref();

  const openMany = async (n: number): Promise<void> => {
    // In batches, so a few hundred SYNs do not overrun the listen backlog at once.
    for (let i = 0; i < n; i += 50) await Promise.all(Array.from({ length: Math.min(50, n - i) }, () => open()));
  };

  const report = (): void => {
    const now = Date.now();
    const live = flows.filter((f) => !f.closed);
    const kept = live.filter((f) => !f.broken);
    const gaps = kept.map((f) => Math.max(f.maxGap, now - f.lastEcho)).sort((a, b) => a - b);
    const reasons: Record<string, number> = {};
    for (const f of live) if (f.broken) reasons[f.broken] = (reasons[f.broken] ?? 0) + 1;
    say(
      `report ${JSON.stringify({
        flows: live.length,
        kept: kept.length,
        broken: live.length - kept.length,
        closed: flows.length - live.length,
        opened: flows.length,
        echoes: flows.reduce((s, f) => s + f.echoes, 0),
        maxStallMs: gaps.length ? gaps[gaps.length - 1] : 0,
        medianStallMs: gaps.length ? gaps[Math.floor(gaps.length / 2)] : 0,
        reasons,
      })}`,
    );
  };

  const command = async (line: string): Promise<void> => {
    const [cmd, arg] = line.trim().split(/\s+/);
    if (cmd === 'mark') {
      for (const f of flows) f.maxGap = 0;
      say('marked');
    } else if (cmd === 'churn') {
      const n = int(arg, 'churn count', 1_000_000);
      const victims = flows.filter((f) => !f.closed && !f.broken);
      for (const f of victims.slice(0, n)) {
        f.closed = true;
        if (f.timer) clearTimeout(f.timer);
        f.sock.end();
      }
      await openMany(n);
      say(`churned ${n}`);
    } else if (cmd === 'report') {
      report();
    } else if (cmd) {
      say(`unknown command ${cmd}`);
    }
  };

  let input = '';
  let chain = Promise.resolve();
  process.stdin.on('data', (d: Buffer) => {
    input += d.toString('utf8');
    for (let i = input.indexOf('\n'); i >= 0; i = input.indexOf('\n')) {
      const line = input.slice(0, i);
      input = input.slice(i + 1);
      chain = chain.then(() => command(line));
    }
  });

  void openMany(k).then(() => {
    const bad = flows.filter((f) => f.broken);
    if (bad.length) fail(`${bad.length} of ${k} connections to ${host}:${port} failed: ${bad[0]?.broken}`);
    announced = true;
    say(`ready ${k}`);
  });
  setTimeout(() => {
    if (!announced) fail(`only ${flows.filter((f) => f.connected).length} of ${k} connections to ${host}:${port} came up in 20 s`);
  }, 20_000).unref();
}

function main(argv: readonly string[]): void {
  const [cmd, a, b, c, d, e] = argv;
  switch (cmd) {
    case 'server':
      return server(a ?? fail('ADDR'), int(b, 'port'));
    case 'client':
      return client(a ?? fail('SRC'), b ?? fail('HOST'), int(c, 'port'), int(d, 'flow count', 100_000), e === undefined ? 5000 : int(e, 'break ms', 3_600_000));
    default:
      fail(`unknown command "${cmd ?? ''}"`);
  }
}

// Die with the harness: a closed stdin means whoever started us is gone.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
main(process.argv.slice(2));

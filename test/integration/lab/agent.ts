// A tiny traffic program run inside a lab namespace (`node agent.js CMD ...`)
// so the kernel itself creates conntrack entries. Each command prints
// "ready ..." / "connected ..." lines the harness waits for, then holds its
// sockets open until killed: an entry stays ESTABLISHED only while its flow
// lives.
//
//   udp-echo ADDR PORT                    echo every datagram back
//   udp-client HOST PORT LPORT            send one datagram, print the reply, exit
//   tcp-server ADDR PORT                  accept, greet, hold
//   tcp-client HOST PORT [LPORT]          connect, read the greeting, hold
//   ftp-server ADDR PORT                  just enough FTP for PASV/EPSV
//   ftp-client HOST PORT PASV|EPSV data|nodata [LPORT]
//       ask for a passive data port; open it ("data") or leave the kernel's
//       expectation pending ("nodata")

import * as dgram from 'node:dgram';
import * as net from 'node:net';

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function fail(message: string): never {
  process.stderr.write(`agent: ${message}\n`);
  process.exit(2);
}

function port(s: string | undefined, what: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 0 || n > 65535) fail(`bad ${what} "${s}"`);
  return n;
}

function udpEcho(addr: string, p: number): void {
  const sock = dgram.createSocket(addr.includes(':') ? 'udp6' : 'udp4');
  sock.on('message', (msg, from) => sock.send(msg, from.port, from.address));
  sock.bind(p, addr, () => say(`ready ${sock.address().port}`));
}

function udpClient(host: string, p: number, lport: number): void {
  const sock = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
  const timer = setTimeout(() => fail(`no reply from ${host}:${p}`), 5_000);
  sock.on('message', () => {
    clearTimeout(timer);
    say(`replied ${sock.address().port}`);
    process.exit(0);
  });
  sock.bind(lport, () => sock.send('ping', p, host));
}

function tcpServer(addr: string, p: number): void {
  const srv = net.createServer((c) => {
    say(`accepted ${c.remoteAddress} ${c.remotePort}`);
    c.on('error', () => undefined);
    c.write('hello\n');
  });
  srv.listen(p, addr, () => say(`ready ${(srv.address() as net.AddressInfo).port}`));
}

function tcpClient(host: string, p: number, lport: number | undefined): void {
  const c = net.connect({ host, port: p, localPort: lport });
  c.on('error', (e) => fail(`connect ${host}:${p}: ${e.message}`));
  c.once('data', () => say(`connected ${c.localPort}`));
}

// Lines of one FTP control connection, CRLF-terminated.
function onLines(sock: net.Socket, handle: (line: string) => void): void {
  let buf = '';
  sock.on('data', (d: Buffer) => {
    buf += d.toString('latin1');
    for (let i = buf.indexOf('\r\n'); i >= 0; i = buf.indexOf('\r\n')) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 2);
      handle(line);
    }
  });
}

function ftpServer(addr: string, p: number): void {
  const srv = net.createServer((ctl) => {
    ctl.on('error', () => undefined);
    ctl.write('220 ctmigrate lab\r\n');
    onLines(ctl, (line) => {
      const verb = line.split(' ')[0]?.toUpperCase();
      if (verb !== 'PASV' && verb !== 'EPSV') {
        ctl.write('200 ok\r\n');
        return;
      }
      const data = net.createServer((dc) => {
        dc.on('error', () => undefined);
        dc.write('data\r\n');
      });
      const local = (ctl.localAddress ?? '').replace(/^::ffff:/, '');
      data.listen(0, local, () => {
        const dp = (data.address() as net.AddressInfo).port;
        // The kernel's FTP helper parses exactly these replies to build its expectation.
        if (verb === 'PASV') {
          ctl.write(`227 Entering Passive Mode (${local.split('.').join(',')},${dp >> 8},${dp & 255})\r\n`);
        } else {
          ctl.write(`229 Entering Extended Passive Mode (|||${dp}|)\r\n`);
        }
      });
    });
  });
  srv.listen(p, addr, () => say(`ready ${(srv.address() as net.AddressInfo).port}`));
}

function ftpClient(host: string, p: number, mode: string, wantData: boolean, lport: number | undefined): void {
  if (mode !== 'PASV' && mode !== 'EPSV') fail(`bad mode ${mode}`);
  const ctl = net.connect({ host, port: p, localPort: lport });
  ctl.on('error', (e) => fail(`control ${host}:${p}: ${e.message}`));
  onLines(ctl, (line) => {
    if (line.startsWith('220')) {
      say(`control ${ctl.localPort}`);
      ctl.write(`${mode}\r\n`);
      return;
    }
    let dataHost = host;
    let dataPort: number | undefined;
    const pasv = /^227 .*\((\d+),(\d+),(\d+),(\d+),(\d+),(\d+)\)/.exec(line);
    if (pasv) {
      dataHost = pasv.slice(1, 5).join('.');
      dataPort = Number(pasv[5]) * 256 + Number(pasv[6]);
    }
    const epsv = /^229 .*\(\|\|\|(\d+)\|\)/.exec(line);
    if (epsv) dataPort = Number(epsv[1]);
    if (dataPort === undefined) return;
    if (!wantData) {
      say(`expect ${dataPort}`);
      return;
    }
    const dc = net.connect({ host: dataHost, port: dataPort });
    dc.on('error', (e) => fail(`data ${dataHost}:${dataPort}: ${e.message}`));
    dc.once('data', () => say(`data ${dc.localPort} ${dataPort}`));
  });
}

function main(argv: readonly string[]): void {
  const [cmd, a, b, c, d, e] = argv;
  switch (cmd) {
    case 'udp-echo':
      return udpEcho(a ?? fail('ADDR'), port(b, 'port'));
    case 'udp-client':
      return udpClient(a ?? fail('HOST'), port(b, 'port'), port(c ?? '0', 'local port'));
    case 'tcp-server':
      return tcpServer(a ?? fail('ADDR'), port(b, 'port'));
    case 'tcp-client':
      return tcpClient(a ?? fail('HOST'), port(b, 'port'), c === undefined ? undefined : port(c, 'local port'));
    case 'ftp-server':
      return ftpServer(a ?? fail('ADDR'), port(b, 'port'));
    case 'ftp-client':
      return ftpClient(a ?? fail('HOST'), port(b, 'port'), c ?? '', d === 'data', e === undefined ? undefined : port(e, 'local port'));
    default:
      fail(`unknown command "${cmd ?? ''}"`);
  }
}

// Die with the harness: a closed stdin means whoever started us is gone.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
main(process.argv.slice(2));

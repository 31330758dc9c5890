/**
 * Netlink reader thread: owns one NetlinkSocket and does nothing but move
 * datagram batches to the thread that decodes them (ThreadedNetlinkSocket).
 *
 * Why a thread of its own: the kernel builds each dump datagram, and copies
 * each event, inside our recvmsg call. On this thread that kernel time
 * overlaps with decoding on the other, so a dump runs at the speed of the
 * slower of the two instead of their sum.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { CONTROL_TEXT_OFFSET, ReaderCommand, ReaderData, ReaderMessage } from './netlink-reader-protocol';
import { NetlinkErrno, NetlinkSocket } from './netlink-socket';

function run(data: ReaderData, port: NonNullable<typeof parentPort>): void {
  const ctl = new Int32Array(data.control, 0, 4);
  let sock: NetlinkSocket;
  try {
    sock = new NetlinkSocket(data.protocol, {
      receiveBytes: data.receiveBytes,
      recvBufferSize: data.recvBufferSize,
      sendBufferSize: data.sendBufferSize,
    });
    for (const g of data.groups) sock.addMembership(g);
    if (data.forceRecvBuffer && data.recvBufferSize) sock.forceRecvBufferSize(data.recvBufferSize);
    ctl[1] = sock.getRecvBufferSize();
    ctl[2] = sock.getSendBufferSize();
    Atomics.store(ctl, 0, 1);
  } catch (e) {
    const text = Buffer.from((e as Error).message ?? String(e));
    const room = new Uint8Array(data.control, CONTROL_TEXT_OFFSET);
    const n = Math.min(text.length, room.length);
    room.set(text.subarray(0, n));
    ctl[3] = n;
    Atomics.store(ctl, 0, -1);
    Atomics.notify(ctl, 0);
    return;
  }
  Atomics.notify(ctl, 0);

  sock.on('message', (buf: Buffer, drained?: boolean) => {
    // A batch from the binding owns its whole ArrayBuffer: hand it over without copying.
    const own = buf.byteOffset === 0 && buf.buffer.byteLength === buf.length ? (buf.buffer as ArrayBuffer) : Uint8Array.prototype.slice.call(buf).buffer;
    const m: ReaderMessage = { k: 'data', b: own, d: drained };
    port.postMessage(m, [own]);
  });
  sock.on('truncatedMessage', () => port.postMessage({ k: 'truncated' } satisfies ReaderMessage));
  sock.on('error', (err: NetlinkErrno) => {
    const m: ReaderMessage = { k: 'error', errno: err.errno ?? 0, code: err.code ?? 'EIO', syscall: err.syscall ?? '', message: err.message };
    port.postMessage(m);
  });
  port.on('message', (cmd: ReaderCommand) => {
    if (cmd.k === 'close') {
      sock.close();
      port.close();
      return;
    }
    sock.send(Buffer.from(cmd.b), (err) => {
      const m: ReaderMessage = { k: 'sent', id: cmd.id, errno: err?.errno ?? 0, code: err?.code ?? '', message: err?.message ?? '' };
      port.postMessage(m);
    });
  });
}

if (parentPort) run(workerData as ReaderData, parentPort);

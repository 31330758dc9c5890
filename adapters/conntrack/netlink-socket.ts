/**
 * NetlinkSocket: a raw netlink socket on ctmigrate's build of the `netlink`
 * package's native binding (see native/build-binding.ts for the fixes it
 * carries: an overrun no longer aborts the process, SO_RCVBUFFORCE).
 *
 * The API mirrors the package's RawNetlinkSocket, trimmed to what ctnetlink
 * needs. When the patched binding was not built, the package's prebuilt one
 * is used and `patched` is false: dumps and writes work the same, but an
 * event-socket overrun can then abort the process.
 */
import { EventEmitter } from 'node:events';
import { dirname, join } from 'node:path';

/** What the native class offers (both builds). */
interface NativeSocket {
  bind(port: number, groups: number): void;
  send(port: number, groups: number, data: Buffer | Buffer[], cb: (err?: NetlinkErrno) => void): void;
  close(): void;
  addMembership(group: number): void;
  getRecvBufferSize(): number;
  setRecvBufferSize(size: number): void;
  setRecvBufferForce?(size: number): void;
  getSendBufferSize(): number;
  setSendBufferSize(size: number): void;
  ref(): void;
  unref(): void;
}

type NativeCtor = new (
  protocol: number,
  msgBuffer: number,
  onMessage: (msg: Buffer, rinfo: { truncated?: number; drained?: boolean }) => void,
  onError: (err: NetlinkErrno) => void,
) => NativeSocket;

/** An error from the native layer: errno number and name, and the syscall. */
export interface NetlinkErrno extends Error {
  errno: number;
  code: string;
  syscall: string;
}

interface Binding {
  ctor: NativeCtor;
  patched: boolean;
}

let binding: Binding | undefined;

function loadBinding(): Binding {
  if (binding) return binding;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const mod = require(join(__dirname, 'native', 'binding', 'build', 'Release', 'ctmigrate_netlink.node')) as { NativeNetlink: NativeCtor };
    binding = { ctor: mod.NativeNetlink, patched: true };
  } catch {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const load = require('node-gyp-build') as (dir: string) => { NativeNetlink: NativeCtor };
    binding = { ctor: load(dirname(require.resolve('netlink/package.json'))).NativeNetlink, patched: false };
  }
  return binding;
}

/** True when the overrun-safe binding is in use. */
export function bindingPatched(): boolean {
  return loadBinding().patched;
}

/** What ctnetlink needs of a raw socket (NetlinkSocket, ThreadedNetlinkSocket). */
export interface RawNetlinkSocket extends EventEmitter {
  forceRecvBufferSize(size: number): number;
  addMembership(group: number): void;
  getRecvBufferSize(): number;
  getSendBufferSize(): number;
  send(data: Buffer, cb: (err?: NetlinkErrno) => void): void;
  unref(): void;
  ref(): void;
  close(): void;
  /** close(), resolving once the socket is really gone (a reader thread has ended). */
  closed(): Promise<void>;
}

export interface NetlinkSocketOptions {
  /** 0: peek each datagram's size (two syscalls); else one fixed receive buffer of this size. */
  receiveBytes: number;
  recvBufferSize?: number;
  sendBufferSize?: number;
}

/**
 * Events: 'message' (buf, drained), 'truncatedMessage' (buf), 'error'
 * (NetlinkErrno). With a fixed receive size, one 'message' carries a batch
 * of datagrams (whole netlink messages back to back) and `drained` says
 * whether the receive queue was empty after it; otherwise `drained` is
 * undefined (unknown).
 */
export class NetlinkSocket extends EventEmitter implements RawNetlinkSocket {
  private readonly native: NativeSocket;
  private open = true;

  constructor(protocol: number, options: NetlinkSocketOptions) {
    super();
    const { ctor } = loadBinding();
    this.native = new ctor(
      protocol,
      options.receiveBytes,
      (msg, rinfo) => {
        if (rinfo.truncated !== undefined) this.emit('truncatedMessage', msg);
        else this.emit('message', msg, rinfo.drained);
      },
      (err) => {
        // With no listener, emit('error') would throw into native code.
        if (this.listenerCount('error') > 0) this.emit('error', err);
      },
    );
    try {
      if (options.recvBufferSize) this.native.setRecvBufferSize(options.recvBufferSize);
      if (options.sendBufferSize) this.native.setSendBufferSize(options.sendBufferSize);
      // Port 0: the kernel picks a unique port for us.
      this.native.bind(0, 0);
    } catch (e) {
      this.native.close();
      throw e;
    }
  }

  /**
   * Ask for a receive buffer of `size` bytes past net.core.rmem_max
   * (SO_RCVBUFFORCE, needs CAP_NET_ADMIN); falls back to SO_RCVBUF.
   * Returns the size granted.
   */
  forceRecvBufferSize(size: number): number {
    try {
      if (this.native.setRecvBufferForce) this.native.setRecvBufferForce(size);
      else this.native.setRecvBufferSize(size);
    } catch {
      this.native.setRecvBufferSize(size);
    }
    return this.native.getRecvBufferSize();
  }

  addMembership(group: number): void {
    this.native.addMembership(group);
  }
  getRecvBufferSize(): number {
    return this.native.getRecvBufferSize();
  }
  getSendBufferSize(): number {
    return this.native.getSendBufferSize();
  }

  /** Send one datagram to the kernel; `cb` gets the send error, if any. */
  send(data: Buffer, cb: (err?: NetlinkErrno) => void): void {
    this.native.send(0, 0, data, cb);
  }

  /** Let the process exit while the socket is open (or not: ref). */
  unref(): void {
    if (this.open) this.native.unref();
  }
  ref(): void {
    if (this.open) this.native.ref();
  }

  close(): void {
    if (!this.open) return;
    this.open = false;
    this.native.close();
  }

  closed(): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

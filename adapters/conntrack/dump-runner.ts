/**
 * Dump runner: sends dump requests one after another on a CtnetlinkSocket
 * and hands every reply message to a sink until each dump's NLMSG_DONE.
 *
 * Operational catch: a dump is flow-controlled by the reader (the kernel
 * fills the next datagram only when we have read the last), so dumps never
 * overrun; but a dump that is interrupted by a table resize may repeat or
 * miss entries (NLM_F_DUMP_INTR), which callers cover by re-dumping on
 * doubt.
 */
import { Errno, errnoName } from './netlink-message';
import { CtnetlinkError, CtnetlinkSocket } from './ctnetlink-socket';

/** Receives each dump reply message (a whole conntrack message at [off, end) of buf). */
export type DumpSink = (buf: Buffer, off: number, end: number) => void;

/** A dump the kernel refused or cut short. */
export class DumpError extends CtnetlinkError {
  constructor(errno: number) {
    super(
      errnoName(errno),
      errno === Errno.EOPNOTSUPP || errno === Errno.EINVAL
        ? `the kernel refused the dump request (${errnoName(errno)}): a dump filter this kernel does not support`
        : `conntrack dump failed: ${errnoName(errno)}`,
    );
    this.name = 'DumpError';
  }
}

/** Runs dumps on a socket whose reply/done/ack handlers delegate to it. */
export class DumpRunner {
  private seq = 0;
  private resolve: (() => void) | null = null;
  private reject: ((e: Error) => void) | null = null;

  constructor(
    private readonly sock: CtnetlinkSocket,
    private sink: DumpSink,
  ) {}

  /** True while a dump is in flight. */
  get busy(): boolean {
    return this.resolve !== null;
  }

  /** Change where replies go (between dumps). */
  setSink(sink: DumpSink): void {
    this.sink = sink;
  }

  /** Run the requests in order; resolves after the last NLMSG_DONE. */
  async run(requests: Buffer[]): Promise<void> {
    for (const req of requests) await this.one(req);
  }

  private one(req: Buffer): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const seq = this.sock.reserve(1);
      const msg = Buffer.from(req);
      msg.writeUInt32LE(seq, 8);
      this.seq = seq;
      this.resolve = resolve;
      this.reject = reject;
      this.sock.send(msg);
    });
  }

  /** Socket handler: a reply message. Returns false when it is not ours. */
  reply(buf: Buffer, off: number, end: number, seq: number): boolean {
    if (seq !== this.seq || this.resolve === null) return false;
    this.sink(buf, off, end);
    return true;
  }

  /** Socket handler: end of a dump. */
  done(seq: number, errno: number): boolean {
    if (seq !== this.seq || this.resolve === null) return false;
    this.finish(errno);
    return true;
  }

  /** Socket handler: an NLMSG_ERROR (the kernel refusing the request itself). */
  ack(seq: number, errno: number): boolean {
    if (seq !== this.seq || this.resolve === null) return false;
    if (errno !== 0) this.finish(errno);
    return true;
  }

  /** Fail the running dump (socket error). */
  abort(err: Error): void {
    const reject = this.reject;
    this.resolve = null;
    this.reject = null;
    reject?.(err);
  }

  private finish(errno: number): void {
    const resolve = this.resolve;
    const reject = this.reject;
    this.resolve = null;
    this.reject = null;
    if (errno === 0) resolve?.();
    else reject?.(new DumpError(errno));
  }
}

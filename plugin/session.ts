import { randomBytes } from 'node:crypto';
import { ServiceEvent, SessionInfo, SessionRole, SessionState } from './migration-service';
import { Clock } from './ports/clock';

/** How long after answering QEMU a held session reports (see releaseSoon). */
export const RELEASE_AFTER_ANSWER_MS = 25;

/** Moves a session may make; anything else is a bug and throws. */
const TRANSITIONS: Record<SessionRole, Record<SessionState, SessionState[]>> = {
  source: {
    preparing: ['precopy', 'failed'],
    precopy: ['streaming', 'cutover', 'failed'],
    streaming: ['cutover', 'failed'],
    cutover: ['migrated', 'failed'],
    ready: [],
    migrated: [],
    failed: [],
  },
  destination: {
    preparing: ['precopy', 'failed'],
    precopy: ['streaming', 'cutover', 'failed'],
    streaming: ['cutover', 'failed'],
    cutover: ['ready', 'failed'],
    ready: ['failed'],
    migrated: [],
    failed: [],
  },
};

/**
 * One migration of one VM on this host, as a state machine plus counters.
 * Every change is stamped with the injected clock and reported to the
 * listener, which turns it into D-Bus properties and signals.
 */
export class Session {
  readonly info: SessionInfo;

  constructor(
    role: SessionRole,
    vm: string,
    readyWhen: string,
    private readonly clock: Clock,
    private readonly listener: (e: ServiceEvent) => void,
    id?: string,
  ) {
    const now = clock.now();
    this.info = {
      id: id ?? randomBytes(8).toString('hex'),
      role,
      vm,
      state: 'preparing',
      peer: '',
      sent: 0,
      received: 0,
      committed: 0,
      refused: 0,
      bytes: 0,
      blocked: false,
      readyWhen,
      version: 0,
      createdAt: now,
      updatedAt: now,
      cutoverAt: 0,
      readyAt: 0,
      resumedAt: 0,
      error: '',
      path: '',
      route: '',
    };
  }

  get state(): SessionState {
    return this.info.state;
  }
  get id(): string {
    return this.info.id;
  }
  /** Finished one way or the other. */
  get over(): boolean {
    return this.info.state === 'failed' || this.info.state === 'migrated' || (this.info.role === 'destination' && this.info.state === 'ready' && this.closed);
  }
  closed = false;

  snapshot(): SessionInfo {
    return { ...this.info };
  }

  /** Reports held back while the VM is paused (see hold()); null when reporting live. */
  private held: ServiceEvent[] | null = null;
  /** QEMU has its answer: the next report releases what is held instead of waiting. */
  private answered = false;

  /**
   * Hold reports back: the state and counters still change at once, but
   * the listener (which turns reports into D-Bus signals, ≈1–2 ms each)
   * hears of them only on release(). For the moments QEMU waits on us with
   * the VM paused: Save() and Load() answer first, the signals follow.
   */
  hold(): void {
    this.held ??= [];
  }

  /**
   * Release a moment after QEMU has its answer: it resumes the VM a few ms
   * later, and on a busy host the signals' marshalling would compete with
   * it for the CPU until then.
   */
  releaseSoon(): void {
    if (!this.held) return;
    this.answered = true;
    this.clock.after(RELEASE_AFTER_ANSWER_MS, () => this.release());
  }

  /** Report everything held back, in order, and report live again. */
  release(): void {
    const held = this.held;
    this.held = null;
    this.answered = false;
    if (held) for (const e of held) this.listener(e);
  }

  private emit(e: ServiceEvent): void {
    if (this.held && this.answered) this.release();
    if (this.held) this.held.push(e);
    else this.listener(e);
  }

  /** Move to `to`; returns false (and changes nothing) if the session already left the states that may. */
  moveTo(to: SessionState): boolean {
    const from = this.info.state;
    if (from === to) return true;
    if (!TRANSITIONS[this.info.role][from].includes(to)) return false;
    this.info.state = to;
    this.info.updatedAt = this.clock.now();
    if (to === 'cutover') this.info.cutoverAt = this.info.updatedAt;
    this.emit({ kind: 'state-changed', session: this.snapshot(), from });
    return true;
  }

  /** Update counters and flags; reports one session-changed. */
  update(patch: Partial<Pick<SessionInfo, 'peer' | 'sent' | 'received' | 'committed' | 'refused' | 'bytes' | 'blocked' | 'version' | 'readyAt' | 'path' | 'route' | 'resumedAt'>>): void {
    Object.assign(this.info, patch);
    this.info.updatedAt = this.clock.now();
    this.emit({ kind: 'session-changed', session: this.snapshot() });
  }

  /** The state is in and the drop is lifted. */
  announceReady(): void {
    this.emit({ kind: 'ready', session: this.snapshot() });
  }

  /** The drop was lifted before the state was ready (timeout policy: open). */
  failOpen(reason: string): void {
    this.emit({ kind: 'fail-open', session: this.snapshot(), reason });
  }

  /** Fail with a reason (first reason wins); false if it was already over. */
  fail(reason: string): boolean {
    if (this.info.state === 'failed' || this.info.state === 'migrated') return false;
    const from = this.info.state;
    this.info.error ||= reason;
    this.info.state = 'failed';
    this.info.updatedAt = this.clock.now();
    this.emit({ kind: 'state-changed', session: this.snapshot(), from });
    this.emit({ kind: 'failed', session: this.snapshot(), reason: this.info.error });
    return true;
  }
}

/**
 * The engine's refusals, told apart by type (never by their words): each
 * adapter maps them to its own face — D-Bus error names, exit statuses.
 */

/** The VM has no session (or no registration) of the kind the call needs on this host. */
export class NoSessionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NoSessionError';
  }
}

/** The VM already has a session here that the call would collide with. */
export class SessionBusyError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SessionBusyError';
  }
}

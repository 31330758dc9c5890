import { formatBytes } from '../../plugin/byte-size';
import { SessionInfo } from '../../plugin/migration-service';

/** One line per session for people: role, VM, state, counts, blocked. */
export function sessionLine(s: SessionInfo): string {
  const parts = [
    `${s.role.padEnd(11)} ${s.vm} ${s.state.padEnd(9)}`,
    s.role === 'source' ? `sent ${s.sent}` : `received ${s.received}, committed ${s.committed}`,
  ];
  if (s.refused) parts.push(`refused ${s.refused}`);
  parts.push(`${formatBytes(s.bytes)}`);
  if (s.role === 'destination') parts.push(s.blocked ? 'traffic blocked' : 'traffic flowing');
  if (s.role === 'destination' && s.resumedAt > 0) {
    if (s.readyAt > s.resumedAt) parts.push(`the VM ran blocked ${s.readyAt - s.resumedAt} ms after it resumed`);
    else if (s.blocked) parts.push('the VM runs, its traffic blocked until the state is in');
  }
  if (s.peer) parts.push(`peer ${s.peer}`);
  if (s.path) parts.push(`path ${s.path}`);
  if (s.route) parts.push(s.route);
  if (s.error) parts.push(`error: ${s.error}`);
  return parts.join(', ');
}

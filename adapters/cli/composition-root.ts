import 'reflect-metadata';
import { container, DependencyContainer } from 'tsyringe';
import { ConntrackNetlink } from '../conntrack/conntrack-netlink';
import { NetlinkFeed } from '../conntrack/netlink-feed';
import { ConnectionFeed } from '../../plugin/ports/connection-feed';
import { ConntrackPort } from '../../plugin/ports/conntrack-port';

/**
 * The composition root: the one place that knows every adapter and binds
 * each to its port. Tests build a child container and override ports.
 */
export function buildContainer(parent: DependencyContainer = container): DependencyContainer {
  const c = parent.createChildContainer();
  c.register<ConntrackPort>(ConntrackPort, { useFactory: () => new ConntrackNetlink() });
  c.register<ConnectionFeed>(ConnectionFeed, { useFactory: () => new NetlinkFeed() });
  return c;
}

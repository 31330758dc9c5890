import type { DependencyContainer } from 'tsyringe';

/**
 * A port's injection token that carries the port's type, in the style of
 * VS Code's createDecorator<T>: one identifier (`ConntrackPort`) is both
 * the interface and its token, and portToken<ConntrackPort>() ties the two.
 * resolvePort(c, ConntrackPort) is then a ConntrackPort without a cast, and
 * providePort(c, ConntrackPort, { useValue: x }) refuses an x that is not
 * one. tsyringe still sees a plain symbol (@inject takes it as is).
 */
export type PortToken<T> = symbol & { readonly __port?: (port: T) => T };

export function portToken<T>(name: string): PortToken<T> {
  return Symbol(name) as PortToken<T>;
}

export function resolvePort<T>(c: DependencyContainer, token: PortToken<T>): T {
  return c.resolve<T>(token);
}

/** A value, a factory, or another port whose type is at least this one (a MigrationDaemon is a MigrationService). */
export type PortProvider<T, S extends T = T> = { useValue: T } | { useFactory: (c: DependencyContainer) => T } | { useToken: PortToken<S> };

export function providePort<T, S extends T = T>(c: DependencyContainer, token: PortToken<T>, provider: PortProvider<T, S>): void {
  if ('useValue' in provider) c.register<T>(token, { useValue: provider.useValue });
  else if ('useFactory' in provider) c.register<T>(token, { useFactory: provider.useFactory });
  else c.register<T>(token, { useToken: provider.useToken });
}

import * as dbus from 'dbus-next';

/** Argument names per method or signal, in order (in-arguments first, then out). */
export type ArgumentNames = Record<string, readonly string[]>;

interface XmlArg {
  $: { name?: string };
}
interface XmlMember {
  $: { name: string };
  arg?: XmlArg[];
}
interface XmlInterface {
  method?: XmlMember[];
  signal?: XmlMember[];
}

/**
 * dbus-next introspects arguments without names; busctl, gdbus and d-feet
 * show names when they exist, which makes the API self-explaining. This
 * patches them into the interface's introspection data.
 */
export function nameArguments(iface: dbus.interface.Interface, names: ArgumentNames): void {
  const target = iface as unknown as { $introspect(): XmlInterface };
  const original = target.$introspect.bind(target);
  target.$introspect = () => {
    const xml = original();
    for (const member of [...(xml.method ?? []), ...(xml.signal ?? [])]) {
      const list = names[member.$.name];
      if (!list || !member.arg) continue;
      member.arg.forEach((a, i) => {
        if (list[i] !== undefined) a.$.name = list[i];
      });
    }
    return xml;
  };
}

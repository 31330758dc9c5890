// QEMU's `-object` option value: "TYPE,key=value,...", where a comma inside
// a value is written twice (",,"). The dbus-vmstate object's id-list is a
// comma-separated list, so it is the one place that escape matters here.

/** A parsed `-object` value; keys keep their order so a rewrite changes only what it must. */
export interface QemuObjectOptions {
  /** qom-type: the leading bare word, or the `qom-type=` key. */
  type: string;
  /** Every key=value in order (qom-type too when written as a key). */
  values: Map<string, string>;
  /** Whether the type was given as a leading bare word. */
  leadingType: boolean;
}

/** Split at single commas; ",," is a literal comma. */
function splitEscaped(text: string): string[] {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < text.length; i++) {
    if (text[i] !== ',') {
      cur += text[i];
    } else if (text[i + 1] === ',') {
      cur += ',';
      i++;
    } else {
      parts.push(cur);
      cur = '';
    }
  }
  parts.push(cur);
  return parts;
}

export function parseQemuObject(text: string): QemuObjectOptions {
  const parts = splitEscaped(text);
  const values = new Map<string, string>();
  let type = '';
  let leadingType = false;
  parts.forEach((p, i) => {
    const eq = p.indexOf('=');
    if (eq < 0) {
      if (i === 0) {
        type = p;
        leadingType = true;
      }
      return;
    }
    values.set(p.slice(0, eq), p.slice(eq + 1));
  });
  if (!leadingType) type = values.get('qom-type') ?? '';
  return { type, values, leadingType };
}

export function formatQemuObject(o: QemuObjectOptions): string {
  const esc = (v: string): string => v.replace(/,/g, ',,');
  const parts: string[] = o.leadingType ? [esc(o.type)] : [];
  for (const [k, v] of o.values) parts.push(`${esc(k)}=${esc(v)}`);
  return parts.join(',');
}

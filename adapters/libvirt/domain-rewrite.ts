// Rewrites of a domain XML by splicing text at the offsets the reader kept:
// everything outside the spliced spans stays byte for byte as libvirt (or
// the operator) wrote it.

import { formatCtMark } from '../../plugin/ct-mark';
import { CTMIGRATE_NS, DomainFacts, DomainXmlError, QEMU_NS } from './domain-xml';
import { formatQemuObject, parseQemuObject } from './qemu-object';
import { childNamed, escapeAttribute, escapeText, XmlElement } from './xml-reader';

/** A rewritten document; `changed` false means `xml` is the input itself. */
export interface Rewrite {
  xml: string;
  changed: boolean;
  /** What was done, for the log. */
  what: string;
}

interface Edit {
  at: number;
  /** End of the replaced span (= at for a pure insertion). */
  to: number;
  text: string;
}

function splice(text: string, edits: Edit[]): string {
  let out = text;
  for (const e of [...edits].sort((a, b) => b.at - a.at)) out = out.slice(0, e.at) + e.text + out.slice(e.to);
  return out;
}

/** The whitespace that starts the line an element starts on. */
function indentOf(text: string, el: XmlElement): string {
  const lineStart = text.lastIndexOf('\n', el.start - 1) + 1;
  const lead = text.slice(lineStart, el.start);
  return /^[ \t]*$/.test(lead) ? lead : '';
}

/** One indentation step as the document uses it (libvirt: two spaces). */
function stepOf(text: string, root: XmlElement): string {
  const first = root.children[0];
  const step = first ? indentOf(text, first) : '';
  return step === '' ? '  ' : step;
}

/** A prefix bound to `ns` on the root, or a fresh one to declare there. */
function rootPrefix(root: XmlElement, ns: string, wanted: string): { prefix: string; declare: boolean } {
  for (const [p, uri] of root.declared) if (uri === ns && p !== '') return { prefix: p, declare: false };
  let prefix = wanted;
  for (let n = 2; root.scope.has(prefix); n++) prefix = `${wanted}${n}`;
  return { prefix, declare: true };
}

function declareOnRoot(root: XmlElement, prefix: string, ns: string): Edit {
  if (root.selfClosing) throw new DomainXmlError('the <domain> element is empty');
  return { at: root.startTagEnd - 1, to: root.startTagEnd - 1, text: ` xmlns:${prefix}='${escapeAttribute(ns)}'` };
}

/**
 * Make the domain's QEMU command line carry our dbus-vmstate object with
 * `objectArgs` (what the local daemon says). An object of ours already
 * there keeps its id and options; only its bus address is pointed at this
 * host's helper (the source's run dir may differ). Otherwise `-object
 * objectArgs` is added through `<qemu:commandline>`, declaring libvirt's
 * qemu namespace on `<domain>` when it is not.
 */
export function withVmstateObject(facts: DomainFacts, objectArgs: string): Rewrite {
  const text = facts.doc.text;
  const root = facts.doc.root;
  const wanted = parseQemuObject(objectArgs);
  const addr = wanted.values.get('addr');
  if (wanted.type !== 'dbus-vmstate' || addr === undefined) throw new DomainXmlError(`not a dbus-vmstate object: ${JSON.stringify(objectArgs)}`);
  const ours = facts.vmstateObjects.filter((o) => o.ours);
  if (ours.length > 0) {
    const edits: Edit[] = [];
    for (const o of ours) {
      if (o.options.values.get('addr') === addr) continue;
      const values = new Map(o.options.values);
      values.set('addr', addr);
      edits.push({ at: o.valueAttribute.valueStart, to: o.valueAttribute.valueEnd, text: escapeAttribute(formatQemuObject({ ...o.options, values })) });
    }
    if (edits.length === 0) return { xml: text, changed: false, what: 'dbus-vmstate object already present' };
    return { xml: splice(text, edits), changed: true, what: `dbus-vmstate object pointed at this host's helper (${addr})` };
  }
  const step = stepOf(text, root);
  const edits: Edit[] = [];
  const existing = childNamed(root, QEMU_NS, 'commandline');
  const arg = (p: string, v: string): string => `<${p}:arg value='${escapeAttribute(v)}'/>`;
  if (existing) {
    const p = existing.prefix;
    const indent = indentOf(text, existing);
    const args = `${arg(p, '-object')}\n${indent}${step}${arg(p, objectArgs)}`;
    if (existing.selfClosing) {
      edits.push({ at: existing.start, to: existing.end, text: `<${existing.name}>\n${indent}${step}${args}\n${indent}</${existing.name}>` });
    } else {
      // Before the end tag, which libvirt puts on a line of its own after the last arg.
      const before = text.slice(text.lastIndexOf('\n', existing.endTagStart - 1) + 1, existing.endTagStart);
      const ownLine = /^[ \t]*$/.test(before) && text.lastIndexOf('\n', existing.endTagStart - 1) > existing.startTagEnd - 1;
      edits.push({ at: existing.endTagStart, to: existing.endTagStart, text: ownLine ? `${step}${args}\n${indent}` : `\n${indent}${step}${args}\n${indent}` });
    }
  } else {
    const { prefix, declare } = rootPrefix(root, QEMU_NS, 'qemu');
    if (declare) edits.push(declareOnRoot(root, prefix, QEMU_NS));
    const block = `${step}<${prefix}:commandline>\n${step}${step}${arg(prefix, '-object')}\n${step}${step}${arg(prefix, objectArgs)}\n${step}</${prefix}:commandline>\n`;
    const atLineStart = text[root.endTagStart - 1] === '\n';
    edits.push({ at: root.endTagStart, to: root.endTagStart, text: atLineStart ? block : `\n${block}` });
  }
  return { xml: splice(text, edits), changed: true, what: `dbus-vmstate object added (${objectArgs})` };
}

/** What `enable-vm` writes into `<metadata>`. */
export interface CtmigrateMetadata {
  addresses: string[];
  zone?: number;
  mark?: { value: number; mask: number };
  require: boolean;
}

/** The children of our `<vm>` element, each with `prefix` ('' where libvirt adds the namespace itself). */
export function metadataChildren(meta: CtmigrateMetadata, prefix: string): string[] {
  const out = meta.addresses.map((a) => `<${prefix}address>${escapeText(a)}</${prefix}address>`);
  if (meta.zone !== undefined) out.push(`<${prefix}zone>${meta.zone}</${prefix}zone>`);
  if (meta.mark !== undefined) out.push(`<${prefix}mark>${formatCtMark(meta.mark)}</${prefix}mark>`);
  if (meta.require) out.push(`<${prefix}require/>`);
  return out;
}

/**
 * Put our `<ctmigrate:vm>` into the domain's `<metadata>`, replacing an
 * earlier one of ours; other metadata stays as it is.
 */
export function withCtmigrateMetadata(facts: DomainFacts, meta: CtmigrateMetadata): Rewrite {
  const text = facts.doc.text;
  const root = facts.doc.root;
  const step = stepOf(text, root);
  const element = (indent: string): string =>
    [`<ctmigrate:vm xmlns:ctmigrate='${CTMIGRATE_NS}'>`, ...metadataChildren(meta, 'ctmigrate:').map((c) => `${step}${c}`), '</ctmigrate:vm>'].join(`\n${indent}`);
  const metadata = childNamed(root, '', 'metadata');
  const edits: Edit[] = [];
  if (facts.metadata) {
    const el = facts.metadata;
    const fresh = element(indentOf(text, el));
    if (text.slice(el.start, el.end) === fresh) return { xml: text, changed: false, what: 'ctmigrate metadata already present' };
    edits.push({ at: el.start, to: el.end, text: fresh });
  } else if (metadata) {
    const indent = indentOf(text, metadata);
    if (metadata.selfClosing) {
      edits.push({ at: metadata.start, to: metadata.end, text: `<metadata>\n${indent}${step}${element(indent + step)}\n${indent}</metadata>` });
    } else {
      edits.push({ at: metadata.endTagStart, to: metadata.endTagStart, text: `${step}${element(indent + step)}\n${indent}` });
    }
  } else {
    // libvirt puts <metadata> after <uuid> (and <title>/<description>); it reorders on define anyway.
    const after = childNamed(root, '', 'uuid') as XmlElement;
    const indent = indentOf(text, after);
    edits.push({ at: after.end, to: after.end, text: `\n${indent}<metadata>\n${indent}${step}${element(indent + step)}\n${indent}</metadata>` });
  }
  return { xml: splice(text, edits), changed: true, what: 'ctmigrate metadata written' };
}

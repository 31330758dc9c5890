// A small, strict XML reader for libvirt's domain XML. It never expands
// anything: DOCTYPE and ENTITY declarations are refused outright, so entity
// bombs and external entities cannot exist, and only the five predefined
// entities and character references are decoded. Every element keeps the
// offsets of its tags in the source text, so a rewrite can splice new text in
// and leave every other byte as libvirt wrote it.

/** Limits that keep a hostile input cheap to refuse. */
export interface XmlLimits {
  /** Longest input in UTF-16 code units (≈ bytes for XML); default 4 Mi. */
  maxLength: number;
  /** Deepest element nesting; libvirt's domain XML is under 10 deep. */
  maxDepth: number;
  /** Most elements in one document. */
  maxElements: number;
  /** Most namespace declarations in one document (each element's scope is a copy: this bounds the copying). */
  maxNamespaces: number;
  /**
   * Wall-clock budget of one parse, checked as it goes: a synchronous parse
   * cannot be cut short by a timer, so the reader watches the clock itself.
   */
  budgetMs: number;
}

export const DEFAULT_XML_LIMITS: XmlLimits = { maxLength: 4 * 1024 * 1024, maxDepth: 128, maxElements: 200_000, maxNamespaces: 1024, budgetMs: 1000 };

/** Work between two looks at the clock (tags and attributes). */
const CLOCK_EVERY = 256;

/** The input is not XML we accept; nothing was done with it. One line, no input echoed. */
export class XmlRefusedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'XmlRefusedError';
  }
}

export const XML_NAMESPACE = 'http://www.w3.org/XML/1998/namespace';
const XMLNS_NAMESPACE = 'http://www.w3.org/2000/xmlns/';

export interface XmlAttribute {
  /** As written, e.g. "xmlns:qemu" or "value". */
  name: string;
  prefix: string;
  local: string;
  /** Namespace URI; '' for unprefixed attributes (they are in no namespace). */
  ns: string;
  /** Decoded value. */
  value: string;
  /** Offsets of the raw value between its quotes. */
  valueStart: number;
  valueEnd: number;
}

export interface XmlElement {
  name: string;
  prefix: string;
  local: string;
  /** Namespace URI, '' when none. */
  ns: string;
  attributes: XmlAttribute[];
  children: XmlElement[];
  parent: XmlElement | null;
  /** Character data directly inside the element (text and CDATA), decoded. */
  text: string;
  /** Offset of the '<' of the start tag. */
  start: number;
  /** Offset just past the start tag's '>'. */
  startTagEnd: number;
  /** Offset of the end tag's '<' (equals startTagEnd for a self-closing tag). */
  endTagStart: number;
  /** Offset just past the element. */
  end: number;
  selfClosing: boolean;
  /** Prefix ('' for the default namespace) → URI, as declared on this element. */
  declared: Map<string, string>;
  /** Prefix → URI in scope at this element. */
  scope: Map<string, string>;
}

export interface XmlDocument {
  text: string;
  root: XmlElement;
}

const NAME_START = /[A-Za-z_\u00C0-\uFFFF]/;
const NAME_CHAR = /[A-Za-z0-9_.\-\u00B7-\uFFFF]/;
const PREDEFINED: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };

/** Decode character data or an attribute value: predefined entities and character references only. */
export function decodeEntities(raw: string, at = 0): string {
  if (!raw.includes('&')) return raw;
  return raw.replace(/&([^;&\s<]{0,32});?/g, (whole, body: string, off: number) => {
    if (!whole.endsWith(';')) throw new XmlRefusedError(`bare '&' at offset ${at + off} (write &amp;)`);
    if (body in PREDEFINED) return PREDEFINED[body];
    const m = /^#(?:x([0-9A-Fa-f]{1,6})|([0-9]{1,7}))$/.exec(body);
    if (!m) throw new XmlRefusedError(`entity &${body.slice(0, 16)}; at offset ${at + off} is not one of XML's predefined entities (entities are never expanded)`);
    const cp = m[1] !== undefined ? parseInt(m[1], 16) : Number(m[2]);
    if (cp === 0 || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) throw new XmlRefusedError(`character reference &${body}; at offset ${at + off} is not a valid character`);
    return String.fromCodePoint(cp);
  });
}

/** Escape text for an attribute value in either quote style. */
export function escapeAttribute(v: string): string {
  return v.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** Escape character data. */
export function escapeText(v: string): string {
  return v.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * Parse `text` into elements with source offsets and resolved namespaces.
 * Refuses (XmlRefusedError) DOCTYPE, entity declarations, undeclared
 * entities, unbound prefixes, duplicate attributes, mismatched tags, more
 * than one root, and anything over the limits.
 */
export function parseXml(text: string, limits: XmlLimits = DEFAULT_XML_LIMITS): XmlDocument {
  if (text.length > limits.maxLength) throw new XmlRefusedError(`document of ${text.length} characters exceeds the limit of ${limits.maxLength}`);
  return new Reader(text, limits).document();
}

class Reader {
  private pos = 0;
  private readonly stack: XmlElement[] = [];
  private root: XmlElement | null = null;
  private elements = 0;
  private namespaces = 0;
  private steps = 0;
  private readonly deadline: number;

  constructor(
    private readonly s: string,
    private readonly limits: XmlLimits,
  ) {
    this.deadline = Date.now() + limits.budgetMs;
  }

  /** One unit of work; every CLOCK_EVERY of them, the budget is checked. */
  private step(): void {
    if (++this.steps % CLOCK_EVERY === 0 && Date.now() > this.deadline) this.fail(`parse over its budget of ${this.limits.budgetMs} ms`);
  }

  document(): XmlDocument {
    const s = this.s;
    if (s.charCodeAt(0) === 0xfeff) this.pos = 1;
    while (this.pos < s.length) {
      const lt = s.indexOf('<', this.pos);
      const textEnd = lt < 0 ? s.length : lt;
      if (textEnd > this.pos) this.characters(this.pos, textEnd);
      if (lt < 0) break;
      this.pos = lt;
      if (s.startsWith('<!--', lt)) this.skipPast('-->', 'comment');
      else if (s.startsWith('<![CDATA[', lt)) this.cdata();
      else if (s.startsWith('<?', lt)) this.processingInstruction();
      else if (s.startsWith('<!', lt)) this.declaration();
      else if (s.startsWith('</', lt)) this.endTag();
      else this.startTag();
    }
    if (this.stack.length) throw new XmlRefusedError(`element <${this.stack[this.stack.length - 1].name}> is never closed`);
    if (!this.root) throw new XmlRefusedError('no root element');
    return { text: s, root: this.root };
  }

  private fail(what: string, at = this.pos): never {
    throw new XmlRefusedError(`${what} at offset ${at}`);
  }

  private characters(from: number, to: number): void {
    const raw = this.s.slice(from, to);
    const top = this.stack[this.stack.length - 1];
    if (!top) {
      if (raw.trim() !== '') this.fail('text outside the root element', from);
      return;
    }
    if (raw.includes(']]>')) this.fail("']]>' in character data", from + raw.indexOf(']]>'));
    top.text += decodeEntities(raw, from);
  }

  private skipPast(terminator: string, what: string): void {
    const end = this.s.indexOf(terminator, this.pos);
    if (end < 0) this.fail(`unterminated ${what}`);
    this.pos = end + terminator.length;
  }

  private cdata(): void {
    const top = this.stack[this.stack.length - 1];
    if (!top) this.fail('CDATA outside the root element');
    const from = this.pos + 9;
    const end = this.s.indexOf(']]>', from);
    if (end < 0) this.fail('unterminated CDATA section');
    top.text += this.s.slice(from, end);
    this.pos = end + 3;
  }

  private processingInstruction(): void {
    const end = this.s.indexOf('?>', this.pos + 2);
    if (end < 0) this.fail('unterminated processing instruction');
    const target = /^[^\s?]*/.exec(this.s.slice(this.pos + 2, end))?.[0] ?? '';
    if (target.toLowerCase() === 'xml') {
      if (this.pos !== 0 && !(this.pos === 1 && this.s.charCodeAt(0) === 0xfeff)) this.fail('XML declaration not at the start');
      const decl = this.s.slice(this.pos, end);
      const enc = /encoding\s*=\s*["']([^"']*)["']/.exec(decl);
      if (enc && !/^utf-?8$/i.test(enc[1])) this.fail(`encoding ${JSON.stringify(enc[1].slice(0, 20))} (only UTF-8 is read)`);
    }
    this.pos = end + 2;
  }

  private declaration(): void {
    const word = /^<!([A-Za-z]*)/.exec(this.s.slice(this.pos, this.pos + 12))?.[1] ?? '';
    if (word.toUpperCase() === 'DOCTYPE') this.fail('DOCTYPE declaration refused (it can declare entities; libvirt never writes one)');
    if (word.toUpperCase() === 'ENTITY') this.fail('ENTITY declaration refused');
    this.fail(`markup declaration <!${word.slice(0, 10)} refused`);
  }

  private name(): string {
    const s = this.s;
    const from = this.pos;
    if (!NAME_START.test(s[this.pos] ?? '')) this.fail('expected a name');
    this.pos++;
    while (this.pos < s.length && (NAME_CHAR.test(s[this.pos]) || s[this.pos] === ':')) this.pos++;
    const n = s.slice(from, this.pos);
    if (n.split(':').length > 2 || n.endsWith(':')) this.fail(`name ${JSON.stringify(n.slice(0, 40))} is not a qualified name`, from);
    return n;
  }

  private spaces(): boolean {
    const from = this.pos;
    while (this.pos < this.s.length && /[ \t\r\n]/.test(this.s[this.pos])) this.pos++;
    return this.pos > from;
  }

  private startTag(): void {
    const start = this.pos;
    if (this.root && this.stack.length === 0) this.fail('second root element');
    if (this.stack.length >= this.limits.maxDepth) this.fail(`elements nested deeper than ${this.limits.maxDepth}`);
    if (++this.elements > this.limits.maxElements) this.fail(`more than ${this.limits.maxElements} elements`);
    this.pos++;
    const name = this.name();
    const raw: { name: string; value: string; valueStart: number; valueEnd: number }[] = [];
    // Names seen on this tag: a duplicate check that stays linear however many attributes there are.
    const names = new Set<string>();
    let selfClosing = false;
    for (;;) {
      this.step();
      const spaced = this.spaces();
      const c = this.s[this.pos];
      if (c === undefined) this.fail(`unterminated start tag <${name}>`, start);
      if (c === '>') {
        this.pos++;
        break;
      }
      if (c === '/') {
        if (this.s[this.pos + 1] !== '>') this.fail("expected '>' after '/'");
        this.pos += 2;
        selfClosing = true;
        break;
      }
      if (!spaced) this.fail('expected a space before the attribute');
      const attrName = this.name();
      this.spaces();
      if (this.s[this.pos] !== '=') this.fail(`attribute ${attrName} has no value`);
      this.pos++;
      this.spaces();
      const q = this.s[this.pos];
      if (q !== '"' && q !== "'") this.fail(`attribute ${attrName} value is not quoted`);
      const valueStart = this.pos + 1;
      const valueEnd = this.s.indexOf(q, valueStart);
      if (valueEnd < 0) this.fail(`unterminated value of attribute ${attrName}`);
      const value = this.s.slice(valueStart, valueEnd);
      if (value.includes('<')) this.fail(`'<' in the value of attribute ${attrName}`, valueStart);
      if (names.has(attrName)) this.fail(`duplicate attribute ${attrName}`);
      names.add(attrName);
      raw.push({ name: attrName, value: decodeEntities(value, valueStart), valueStart, valueEnd });
      this.pos = valueEnd + 1;
    }
    const parent = this.stack[this.stack.length - 1] ?? null;
    const declared = new Map<string, string>();
    for (const a of raw) {
      const declares = a.name === 'xmlns' || a.name.startsWith('xmlns:');
      if (declares && ++this.namespaces > this.limits.maxNamespaces) this.fail(`more than ${this.limits.maxNamespaces} namespace declarations`, start);
      if (a.name === 'xmlns') declared.set('', a.value);
      else if (declares) {
        const p = a.name.slice(6);
        if (a.value === '') this.fail(`namespace prefix ${p} bound to an empty URI`, start);
        if (p === 'xmlns' || (p === 'xml') !== (a.value === XML_NAMESPACE)) this.fail(`reserved prefix or namespace misused by ${a.name}`, start);
        declared.set(p, a.value);
      }
    }
    const scope = declared.size ? new Map([...(parent?.scope ?? []), ...declared]) : (parent?.scope ?? new Map<string, string>([['xml', XML_NAMESPACE]]));
    const [prefix, local] = splitName(name);
    const ns = prefix ? scope.get(prefix) : (scope.get('') ?? '');
    if (ns === undefined) this.fail(`prefix ${prefix} of <${name}> is not bound to a namespace`, start);
    const attributes: XmlAttribute[] = raw.map((a) => {
      const [ap, al] = splitName(a.name);
      let ans = '';
      if (a.name === 'xmlns' || ap === 'xmlns') ans = XMLNS_NAMESPACE;
      else if (ap) {
        const bound = scope.get(ap);
        if (bound === undefined) this.fail(`prefix ${ap} of attribute ${a.name} is not bound to a namespace`, start);
        ans = bound;
      }
      return { name: a.name, prefix: ap, local: al, ns: ans, value: a.value, valueStart: a.valueStart, valueEnd: a.valueEnd };
    });
    const seen = new Set<string>();
    for (const a of attributes) {
      const key = `${a.ns}\u0000${a.local}`;
      if (a.ns && seen.has(key)) this.fail(`attribute {${a.ns}}${a.local} given twice`, start);
      seen.add(key);
    }
    const el: XmlElement = {
      name,
      prefix,
      local,
      ns,
      attributes,
      children: [],
      parent,
      text: '',
      start,
      startTagEnd: this.pos,
      endTagStart: this.pos,
      end: this.pos,
      selfClosing,
      declared,
      scope,
    };
    if (parent) parent.children.push(el);
    else this.root = el;
    if (!selfClosing) this.stack.push(el);
  }

  private endTag(): void {
    this.step();
    const at = this.pos;
    this.pos += 2;
    const name = this.name();
    this.spaces();
    if (this.s[this.pos] !== '>') this.fail(`unterminated end tag </${name}>`, at);
    this.pos++;
    const top = this.stack.pop();
    if (!top) this.fail(`end tag </${name}> without a start tag`, at);
    if (top.name !== name) this.fail(`end tag </${name}> does not close <${top.name}>`, at);
    top.endTagStart = at;
    top.end = this.pos;
  }
}

function splitName(n: string): [string, string] {
  const i = n.indexOf(':');
  return i < 0 ? ['', n] : [n.slice(0, i), n.slice(i + 1)];
}

/** Direct children with this namespace and local name. */
export function childrenNamed(el: XmlElement, ns: string, local: string): XmlElement[] {
  return el.children.filter((c) => c.ns === ns && c.local === local);
}

/** The first direct child with this namespace and local name. */
export function childNamed(el: XmlElement, ns: string, local: string): XmlElement | undefined {
  return el.children.find((c) => c.ns === ns && c.local === local);
}

/** An unprefixed attribute's value. */
export function attribute(el: XmlElement, name: string): string | undefined {
  return el.attributes.find((a) => a.ns === '' && a.local === name && a.prefix === '')?.value;
}

/** Every element in document order (iterative: the depth is bounded anyway, but no recursion is cheaper still). */
export function allElements(root: XmlElement): XmlElement[] {
  const out: XmlElement[] = [];
  const todo: XmlElement[] = [root];
  while (todo.length) {
    const el = todo.pop() as XmlElement;
    out.push(el);
    for (let i = el.children.length - 1; i >= 0; i--) todo.push(el.children[i]);
  }
  return out;
}

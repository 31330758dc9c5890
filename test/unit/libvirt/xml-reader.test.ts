import { strict as assert } from 'node:assert';
import { allElements, attribute, childNamed, DEFAULT_XML_LIMITS, parseXml, XmlRefusedError } from '../../../adapters/libvirt/xml-reader';

const refused = (xml: string, pattern: RegExp, limits = DEFAULT_XML_LIMITS): void => {
  assert.throws(() => parseXml(xml, limits), (e: unknown) => e instanceof XmlRefusedError && pattern.test(e.message) && !e.message.includes('\n'));
};

describe('xml reader', () => {
  it('reads attributes in either quote style, self-closing tags, comments, CDATA and the XML declaration', () => {
    const doc = parseXml(`<?xml version="1.0" encoding="UTF-8"?>
<!-- before -->
<a x='1' y="two &amp; &#x33;&#52;"><b/><!-- inside --><c><![CDATA[<not> & markup]]> tail &lt;</c></a>
<!-- after -->`);
    const a = doc.root;
    assert.equal(attribute(a, 'x'), '1');
    assert.equal(attribute(a, 'y'), 'two & 34');
    assert.equal(a.children.map((c) => c.name).join(','), 'b,c');
    assert.ok(a.children[0].selfClosing);
    assert.equal(childNamed(a, '', 'c')?.text, '<not> & markup tail <');
  });

  it('keeps the source offsets of every tag and attribute value', () => {
    const text = `<a><b k='v'>t</b></a>`;
    const b = parseXml(text).root.children[0];
    assert.equal(text.slice(b.start, b.startTagEnd), `<b k='v'>`);
    assert.equal(text.slice(b.endTagStart, b.end), '</b>');
    assert.equal(text.slice(b.attributes[0].valueStart, b.attributes[0].valueEnd), 'v');
  });

  it('resolves namespaces whatever the prefix, and default namespaces', () => {
    const doc = parseXml(`<r xmlns:x="urn:ctmigrate:vm:1"><x:vm/><y:vm xmlns:y="urn:ctmigrate:vm:1"/><z xmlns="urn:other"><w/></z></r>`);
    const els = allElements(doc.root);
    assert.deepEqual(els.map((e) => `${e.ns}|${e.local}`), ['|r', 'urn:ctmigrate:vm:1|vm', 'urn:ctmigrate:vm:1|vm', 'urn:other|z', 'urn:other|w']);
  });

  it('refuses a DOCTYPE, so no entity can be declared (billion laughs)', () => {
    refused(`<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<domain>&lol2;</domain>`, /DOCTYPE/);
  });

  it('refuses external entities and undeclared entity references without expanding anything', () => {
    refused(`<!DOCTYPE d [<!ENTITY xxe SYSTEM "file:///etc/shadow">]><d>&xxe;</d>`, /DOCTYPE/);
    refused(`<d>&xxe;</d>`, /entity &xxe;/);
    refused(`<d a="&lol;"/>`, /entity &lol;/);
    refused(`<d>a & b</d>`, /bare '&'/);
  });

  it('refuses malformed documents with one line', () => {
    refused(`<a><b></a>`, /does not close/);
    refused(`<a>`, /never closed/);
    refused(`<a/><b/>`, /second root/);
    refused(`<a x=1/>`, /not quoted/);
    refused(`<a x="1" x="2"/>`, /duplicate attribute/);
    refused(`<q:a/>`, /not bound/);
    refused(`text<a/>`, /outside the root/);
    refused(``, /no root/);
    refused(`<a x="<"/>`, /'<'/);
    refused(`<?xml version="1.0" encoding="ISO-8859-1"?><a/>`, /encoding/);
  });

  it('refuses input over the size limit before reading it (10 MiB)', () => {
    const big = `<domain>${'<x/>'.repeat((10 * 1024 * 1024) / 4)}</domain>`;
    const t = Date.now();
    refused(big, /exceeds the limit/);
    assert.ok(Date.now() - t < 100);
  });

  it('refuses deep nesting without recursion', () => {
    const depth = 100_000;
    refused(`${'<a>'.repeat(depth)}${'</a>'.repeat(depth)}`, /nested deeper than 128/);
  });

  it('refuses documents with too many elements', () => {
    refused(`<a>${'<b/>'.repeat(11)}</a>`, /more than 10 elements/, { ...DEFAULT_XML_LIMITS, maxElements: 10 });
  });

  it('reads a tag with 100,000 attributes in one pass (the duplicate check is linear)', () => {
    const attrs = Array.from({ length: 100_000 }, (_, i) => ` a${i}="v"`).join('');
    const doc = parseXml(`<domain><metadata><m${attrs}/></metadata></domain>`);
    assert.equal(doc.root.children[0].children[0].attributes.length, 100_000);
  });

  it('still finds a duplicate among many attributes', () => {
    const attrs = Array.from({ length: 5000 }, (_, i) => ` a${i}="v"`).join('');
    refused(`<domain${attrs} a17="w"/>`, /duplicate attribute a17/);
  });

  it('refuses a document whose namespace declarations would make every scope large', () => {
    const decls = Array.from({ length: 1025 }, (_, i) => ` xmlns:p${i}="urn:x:${i}"`).join('');
    refused(`<domain${decls}/>`, /more than 1024 namespace declarations/);
  });

  it('stops a parse that runs over its time budget while it runs, not after', () => {
    // A budget already spent: the reader looks at the clock every 256 tags and attributes.
    const doc = `<domain>${'<x a="1" b="2"/>'.repeat(2000)}</domain>`;
    refused(doc, /parse over its budget of -1 ms at offset \d+/, { ...DEFAULT_XML_LIMITS, budgetMs: -1 });
  });
});

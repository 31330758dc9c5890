/*
 * The JSON-lines format of an entry, in four parts by concept:
 * conntrack-names.ts (states, status bits, protocols), flow-json-print.ts
 * (record -> object), flow-json-parse.ts (line -> record, checked) and
 * json-lines.ts (whole inputs and outputs). This file is their one
 * import and the description of the format.
 *
 * JSON lines: one conntrack entry per line, for people (and scripts), and
 * loadable back. Field names follow conntrack(8)'s output. A line looks like
 *
 * {"family":"ipv4","proto":"tcp","protonum":6,"state":"ESTABLISHED","timeout":431999,
 *  "orig":{"src":"192.0.2.1","dst":"198.51.100.2","sport":40000,"dport":22},
 *  "reply":{"src":"198.51.100.2","dst":"192.0.2.1","sport":22,"dport":40000},
 *  "status":["SEEN_REPLY","ASSURED","CONFIRMED"],"mark":0,"zone":0,
 *  "tcp":{"wscale_orig":7,"wscale_reply":7,"flags_orig":35,"flags_reply":35},"id":123}
 *
 * Fields appear only when the record has them (timeout, mark, zone, id each
 * have a presence flag; extension parts their present bit):
 *   family        "ipv4" | "ipv6"
 *   proto         tcp udp udplite icmp icmpv6 sctp gre dccp, else "unknown"
 *   protonum      IP protocol number (always printed; alone it is enough on load)
 *   state         protocol state name (TCP, SCTP, DCCP) or its number
 *   timeout, mark, zone, id    u32 (zone u16)
 *   orig, reply   tuples: src, dst, then by protocol
 *                   ports (tcp udp udplite sctp dccp): sport, dport
 *                   gre: srckey, dstkey
 *                   icmp, icmpv6: type, code, id
 *                   other: sport, dport only when non-zero
 *                 and "zone" when that tuple carried CTA_TUPLE_ZONE (the
 *                 record has one zone value, so both must agree)
 *   status        IPS_* names; a bit without a name as "BIT<n>"
 *   tcp           wscale_orig, wscale_reply, flags_orig, flags_reply (with state)
 *   sctp          vtag_orig, vtag_reply (with state)
 *   labels        set label bits, ascending (0..127)
 *   helper        helper name
 *   seqadj        {"orig":{correction_pos,offset_before,offset_after},"reply":{...}}
 *   synproxy      {isn, its, tsoff}
 *   master        {family, proto, protonum, src, dst, sport, dport}
 * Read-only (the kernel's own; printed, parsed into the record so a line
 * round-trips, never sent to the kernel): id, use, counters
 * {"orig":{packets,bytes},"reply":{...}}, timestamp {start, stop} (ns),
 * secmark. 64-bit values are JSON numbers up to 2^53 - 1, decimal strings
 * above. The table-owned version is not part of a line.
 */


export * from './conntrack-names';
export * from './flow-json-print';
export * from './flow-json-parse';
export * from './json-lines';

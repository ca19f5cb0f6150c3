/**
 * Reading a rendered user-data document back: the files cloud-init writes, with their content as
 * it lands on the node (gz+b64 unpacked). For tests and tools that check what a server receives.
 */
import { gunzipSync, gzipSync } from "node:zlib";
import * as yaml from "js-yaml";

export interface WrittenFile {
  path: string;
  owner?: string;
  permissions?: string;
  defer?: boolean;
  encoding?: string;
  /** The content as written on the node. */
  content: string;
}

/** gzip + base64, as cloud-init's `encoding: gz+b64` expects (Hetzner takes at most 32 KiB of user data). */
export function gzB64(text: string): string {
  return gzipSync(text, { level: 9 }).toString("base64");
}

export function writtenFiles(userData: string): WrittenFile[] {
  const doc = yaml.load(userData) as { write_files?: WrittenFile[] };
  return (doc.write_files ?? []).map((f) => ({
    ...f,
    content: f.encoding === "gz+b64" ? gunzipSync(Buffer.from(f.content, "base64")).toString("utf8") : f.content,
  }));
}

/** The document with every gz+b64 file unpacked in place (readable, and maskable in a snapshot). */
export function expandUserData(userData: string): string {
  const doc = yaml.load(userData) as { write_files?: WrittenFile[] };
  doc.write_files = writtenFiles(userData).map(({ encoding, ...f }) => (encoding ? { ...f, unpacked_from: encoding } : f)) as WrittenFile[];
  const header = userData.split("\n").filter((line, i, all) => all.slice(0, i + 1).every((l) => l.startsWith("#")));
  return [...header, yaml.dump(doc, { lineWidth: -1 })].join("\n");
}

/**
 * The node's files in its user data, and reading a rendered document back: the files as they land
 * on the node (gz+b64 and the Brotli file bundle unpacked). For tests and tools that check what a server
 * receives.
 */
import { brotliCompressSync, brotliDecompressSync, constants as zlib, gunzipSync } from "node:zlib";
import * as yaml from "js-yaml";
import { createTar, parseTar } from "nanotar";

export interface WrittenFile {
  path: string;
  owner?: string;
  permissions?: string;
  defer?: boolean;
  encoding?: string;
  /** The content as written on the node. */
  content: string;
}

/** A file that travels in the node's file bundle, with the owner and mode it lands with. */
export interface BundledFile {
  path: string;
  owner: string;
  mode: string;
  content: string;
}

/** The encoding of the bundle's write_files entry: base64 of a Brotli-compressed tar. */
export const BUNDLE_ENCODING = "b64";
/** How the bundle's path ends (paths.fileBundle). */
export const BUNDLE_SUFFIX = ".tar.br";

/**
 * The files as one tar, compressed with Brotli at its best (quality 11, a 16 MiB window) and
 * base64-encoded; cloud-init writes it, the first boot unpacks it with `tar -I brotli` (the
 * package is in NODE_PACKAGES) and owners by name. Brotli rather than gzip: the same tar comes out
 * about an eighth smaller, 3 KiB and more of Hetzner's 32 KiB, where a 5-node stack with gzip used
 * all but a few hundred bytes. Deterministic: the same files give the same bytes (mtime 0; the
 * node unpacks with --touch), so a user data that did not change does not look changed.
 */
export function bundleFiles(files: BundledFile[]): string {
  const tar = createTar(
    files.map((f) => {
      const [user, group] = f.owner.split(":");
      return {
        name: f.path.replace(/^\//, ""),
        data: f.content,
        attrs: { mode: f.mode, user, group, uid: 0, gid: 0, mtime: 0 },
      };
    }),
  );
  return brotliCompressSync(tar, {
    params: {
      [zlib.BROTLI_PARAM_MODE]: zlib.BROTLI_MODE_TEXT,
      [zlib.BROTLI_PARAM_QUALITY]: zlib.BROTLI_MAX_QUALITY,
      [zlib.BROTLI_PARAM_LGWIN]: 24,
      [zlib.BROTLI_PARAM_SIZE_HINT]: tar.length,
    },
  }).toString("base64");
}

/** The files of a bundle, as they land on the node. */
export function unbundleFiles(content: string): WrittenFile[] {
  return parseTar(brotliDecompressSync(Buffer.from(content, "base64"))).map((entry) => ({
    path: `/${entry.name}`,
    owner: `${entry.attrs?.user}:${entry.attrs?.group}`,
    permissions: `0${(entry.attrs?.mode ?? "").replace(/^0+/, "")}`,
    defer: true,
    content: Buffer.from(entry.data ?? new Uint8Array()).toString("utf8"),
  }));
}

/** The bundle's own entry is the archive, not a file of the node: it is listed by what it holds. */
function isBundle(f: WrittenFile): boolean {
  return f.encoding === BUNDLE_ENCODING && f.path.endsWith(BUNDLE_SUFFIX);
}

export function writtenFiles(userData: string): WrittenFile[] {
  const doc = yaml.load(userData) as { write_files?: WrittenFile[] };
  return (doc.write_files ?? []).flatMap((f) =>
    isBundle(f)
      ? unbundleFiles(f.content)
      : [
          {
            ...f,
            content:
              f.encoding === "gz+b64" ? gunzipSync(Buffer.from(f.content, "base64")).toString("utf8") : f.content,
          },
        ],
  );
}

/** The document with every gz+b64 file unpacked in place (readable, and maskable in a snapshot). */
export function expandUserData(userData: string): string {
  const doc = yaml.load(userData) as { write_files?: WrittenFile[] };
  doc.write_files = (doc.write_files ?? []).flatMap((f) =>
    isBundle(f)
      ? unbundleFiles(f.content).map((inner) => ({ ...inner, unpacked_from: f.path }))
      : writtenFiles(yaml.dump({ write_files: [f] })).map(({ encoding, ...w }) =>
          encoding ? { ...w, unpacked_from: encoding } : w,
        ),
  ) as WrittenFile[];
  const header = userData.split("\n").filter((line, i, all) => all.slice(0, i + 1).every((l) => l.startsWith("#")));
  return [...header, yaml.dump(doc, { lineWidth: -1 })].join("\n");
}

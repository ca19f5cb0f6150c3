/**
 * SSH keys as text: the public half an OpenSSH private key file carries in its clear header, so
 * the program can tell, before anything is declared, whether the keys it is about to make root's
 * only keys still let Pulumi itself in.
 */

/**
 * `type base64` of the first key in an OpenSSH private key file (what `ssh-keygen -y` prints,
 * without a comment); undefined for other formats (PEM) or a malformed file. Needs no passphrase:
 * the public key is outside the encrypted part.
 */
export function openSshPublicKey(privateKey: string): string | undefined {
  const body = /-----BEGIN OPENSSH PRIVATE KEY-----([\s\S]+?)-----END OPENSSH PRIVATE KEY-----/.exec(privateKey)?.[1];
  if (!body) return undefined;
  const buf = Buffer.from(body.replace(/\s+/g, ""), "base64");
  const magic = Buffer.from("openssh-key-v1\0", "latin1");
  if (!buf.subarray(0, magic.length).equals(magic)) return undefined;
  let at = magic.length;
  const field = (): Buffer => {
    if (at + 4 > buf.length) throw new RangeError("truncated");
    const length = buf.readUInt32BE(at);
    if (at + 4 + length > buf.length) throw new RangeError("truncated");
    const out = buf.subarray(at + 4, at + 4 + length);
    at += 4 + length;
    return out;
  };
  try {
    field(); // cipher
    field(); // kdf
    field(); // kdf options
    if (at + 4 > buf.length || buf.readUInt32BE(at) < 1) return undefined;
    at += 4;
    const blob = field();
    const type = blob.subarray(4, 4 + blob.readUInt32BE(0)).toString("latin1");
    return `${type} ${blob.toString("base64")}`;
  } catch {
    return undefined;
  }
}

/** Whether `keys` (authorized_keys lines) hold `publicKey` (type and base64; comments do not count). */
export function holdsKey(keys: readonly string[], publicKey: string): boolean {
  const [type, data] = publicKey.trim().split(/\s+/);
  return keys.some((k) => {
    const [t, d] = k.trim().split(/\s+/);
    return t === type && d === data;
  });
}

// Who may send as whom (RFC 6409 §8.1): an authenticated user may use their
// own address and the addresses or whole domains ('@domain') listed for
// them. Used for MAIL FROM (in the session) and From: (in intake).

/** True when `address` matches one of `allowed` ("user@domain" exactly, or "@domain"). */
export function mayUseAddress(address: string, allowed: string[]): boolean {
  const a = address.toLowerCase();
  const at = a.lastIndexOf('@');
  const domain = at >= 0 ? a.slice(at) : '';
  // "user+tag@domain" is the user's own address too (plus-addressing).
  const base = at >= 0 ? a.slice(0, at).replace(/\+.*$/, '') + domain : a;
  return allowed.some((p) => {
    const q = p.toLowerCase();
    return q.startsWith('@') ? q === domain : q === a || q === base;
  });
}

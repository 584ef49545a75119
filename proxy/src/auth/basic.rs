//! Basic authentication (ingress-nginx's `auth-type: basic`): users and
//! password hashes from a Secret, as Apache's `htpasswd` writes them:
//! bcrypt (`$2y$`, `-B`), apr1 (`$apr1$`, `-m`, its default), MD5-crypt
//! (`$1$`) and SHA-1 (`{SHA}`, `-s`). Hashes are compared in constant time.
//!
//! bcrypt is slow on purpose (milliseconds to a tenth of a second): it runs
//! off the request threads, one per CPU at a time, and an `Authorization` value that passed is
//! remembered (by a keyed hash, never the password) for a minute, so that a
//! logged-in browser does not pay it per request. The memory goes with the
//! snapshot: a rotated Secret forgets every remembered login.

use base64::Engine;
use md5::{Digest, Md5};
use siphasher::sip128::{Hasher128, SipHasher13};
use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// A password hash as a password file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$2a$`, `$2b$`, `$2y$`: checked by the bcrypt crate.
    Bcrypt(String),
    /// `$apr1$SALT$HASH` or `$1$SALT$HASH`: the whole string, recomputed.
    Md5Crypt {
        magic: &'static str,
        salt: String,
        full: String,
    },
    /// `{SHA}base64`: the SHA-1 digest.
    Sha1([u8; 20]),
}

impl PasswordHash {
    /// Read one hash; `Err` names what it is not.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if ["$2a$", "$2b$", "$2y$"].iter().any(|p| text.starts_with(p)) {
            // Checks the cost and the encoding now, not at the first login.
            text.parse::<bcrypt::HashParts>()
                .map_err(|e| format!("bad bcrypt hash: {e}"))?;
            return Ok(PasswordHash::Bcrypt(text.to_string()));
        }
        for magic in ["$apr1$", "$1$"] {
            if let Some(rest) = text.strip_prefix(magic) {
                let (salt, hash) = rest
                    .split_once('$')
                    .ok_or_else(|| format!("bad {magic} hash: no salt"))?;
                if salt.len() > 8 || hash.len() != 22 {
                    return Err(format!("bad {magic} hash"));
                }
                return Ok(PasswordHash::Md5Crypt {
                    magic,
                    salt: salt.to_string(),
                    full: text.to_string(),
                });
            }
        }
        if let Some(encoded) = text.strip_prefix("{SHA}") {
            let digest = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()
                .and_then(|d| <[u8; 20]>::try_from(d).ok())
                .ok_or("bad {SHA} hash")?;
            return Ok(PasswordHash::Sha1(digest));
        }
        Err("not a hash htpasswd writes (bcrypt $2y$, apr1 $apr1$, MD5 $1$ or {SHA}): crypt(3) DES and plain text are not accepted".into())
    }

    fn is_slow(&self) -> bool {
        matches!(self, PasswordHash::Bcrypt(_))
    }

    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            PasswordHash::Md5Crypt { magic, salt, full } => {
                let computed = md5_crypt(password, magic, salt.as_bytes());
                computed.as_bytes().ct_eq(full.as_bytes()).into()
            }
            PasswordHash::Sha1(digest) => {
                let computed = sha1::Sha1::digest(password);
                computed.as_slice().ct_eq(digest).into()
            }
        }
    }
}

/// MD5-crypt (Poul-Henning Kamp's, as Apache's apr1 and glibc's `$1$` run
/// it, with the magic as the only difference), over RustCrypto's MD5.
fn md5_crypt(password: &[u8], magic: &str, salt: &[u8]) -> String {
    let mut alternate = Md5::new();
    alternate.update(password);
    alternate.update(salt);
    alternate.update(password);
    let alternate = alternate.finalize();

    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(magic.as_bytes());
    ctx.update(salt);
    for chunk in password.chunks(16) {
        ctx.update(&alternate[..chunk.len()]);
    }
    let mut n = password.len();
    while n > 0 {
        if n & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        n >>= 1;
    }
    let mut digest = ctx.finalize();
    for round in 0..1000 {
        let mut ctx = Md5::new();
        if round & 1 == 1 {
            ctx.update(password);
        } else {
            ctx.update(digest);
        }
        if round % 3 != 0 {
            ctx.update(salt);
        }
        if round % 7 != 0 {
            ctx.update(password);
        }
        if round & 1 == 1 {
            ctx.update(digest);
        } else {
            ctx.update(password);
        }
        digest = ctx.finalize();
    }
    const ALPHABET: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(magic.len() + salt.len() + 23);
    out.push_str(magic);
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    let mut encode = |value: u32, chars: usize| {
        for i in 0..chars {
            out.push(ALPHABET[((value >> (6 * i)) & 0x3f) as usize] as char);
        }
    };
    for [a, b, c] in [[0, 6, 12], [1, 7, 13], [2, 8, 14], [3, 9, 15], [4, 10, 5]] {
        let v = (u32::from(digest[a]) << 16) | (u32::from(digest[b]) << 8) | u32::from(digest[c]);
        encode(v, 4);
    }
    encode(u32::from(digest[11]), 2);
    out
}

/// How long a passed `Authorization` value is remembered.
const REMEMBERED_FOR: Duration = Duration::from_secs(60);
/// At most this many remembered; when full, all are forgotten.
const REMEMBERED_MAX: usize = 4096;

/// A route's basic auth, compiled.
pub struct CompiledBasicAuth {
    users: HashMap<String, PasswordHash>,
    /// `Basic realm="..."`.
    challenge: http::HeaderValue,
    /// Keyed hashes of `Authorization` values that passed, and when.
    passed: Mutex<HashMap<u128, Instant>>,
    key: (u64, u64),
}

impl CompiledBasicAuth {
    pub fn new(auth: &crate::route::BasicAuth) -> Self {
        let users = auth
            .users
            .iter()
            .filter_map(|(user, hash)| Some((user.clone(), PasswordHash::parse(hash).ok()?)))
            .collect();
        let realm = auth.realm.replace(['"', '\\'], "");
        let challenge = http::HeaderValue::from_str(&format!("Basic realm=\"{realm}\""))
            .unwrap_or_else(|_| http::HeaderValue::from_static("Basic realm=\"\""));
        CompiledBasicAuth {
            users,
            challenge,
            passed: Mutex::new(HashMap::new()),
            key: (rand_u64(), rand_u64()),
        }
    }

    /// Whether `authorization` (the request's header) names a user of the
    /// file with the right password.
    pub async fn allows(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let fingerprint = self.fingerprint(value);
        if self.remembered(fingerprint) {
            return true;
        }
        let Some((user, password)) = credentials(value) else {
            return false;
        };
        let Some(hash) = self.users.get(&user) else {
            return false;
        };
        let passed = if hash.is_slow() {
            // At most one bcrypt per CPU at a time: a flood of wrong
            // passwords waits here instead of taking every core.
            static SLOW: std::sync::LazyLock<tokio::sync::Semaphore> =
                std::sync::LazyLock::new(|| {
                    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
                    tokio::sync::Semaphore::new(cpus)
                });
            let Ok(_turn) = SLOW.acquire().await else {
                return false;
            };
            let hash = hash.clone();
            tokio::task::spawn_blocking(move || hash.verify(&password))
                .await
                .unwrap_or(false)
        } else {
            hash.verify(&password)
        };
        if passed {
            let mut passed = self.passed.lock().unwrap_or_else(|e| e.into_inner());
            if passed.len() >= REMEMBERED_MAX {
                passed.clear();
            }
            passed.insert(fingerprint, Instant::now());
        }
        passed
    }

    /// The `WWW-Authenticate` of a 401.
    pub fn challenge(&self) -> http::HeaderValue {
        self.challenge.clone()
    }

    fn fingerprint(&self, value: &[u8]) -> u128 {
        let mut hasher = SipHasher13::new_with_keys(self.key.0, self.key.1);
        hasher.write(value);
        hasher.finish128().as_u128()
    }

    fn remembered(&self, fingerprint: u128) -> bool {
        let passed = self.passed.lock().unwrap_or_else(|e| e.into_inner());
        passed
            .get(&fingerprint)
            .is_some_and(|at| at.elapsed() < REMEMBERED_FOR)
    }
}

/// A per-process random key for the fingerprints (from the OS, through std's
/// randomly seeded hasher).
fn rand_u64() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(Instant::now())
}

/// `Basic base64(user:password)` → (user, password).
fn credentials(value: &[u8]) -> Option<(String, Vec<u8>)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// Users with usable hashes, as (user, hash), and why others were left out.
pub type Users = (Vec<(String, String)>, Vec<String>);

/// A password file (`auth-secret-type: auth-file`, key `auth`): `user:hash`
/// lines; blank lines and `#` comments skipped. Each user with a hash that
/// cannot be used is left out and named in the second list.
pub fn parse_file(text: &str) -> Users {
    let mut users = Vec::new();
    let mut bad = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((user, hash)) => check_user(user, hash, &mut users, &mut bad),
            None => bad.push(format!("a line without user:hash ({} bytes)", line.len())),
        }
    }
    (users, bad)
}

/// One user of a file or map: kept if its hash can be used.
pub fn check_user(
    user: &str,
    hash: &str,
    users: &mut Vec<(String, String)>,
    bad: &mut Vec<String>,
) {
    match PasswordHash::parse(hash) {
        Ok(_) => users.push((user.to_string(), hash.trim().to_string())),
        Err(e) => bad.push(format!("user {user:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_crypt_matches_known_hashes() {
        // `openssl passwd -apr1 -salt abcdefgh password`, `openssl passwd -1 -salt saltsalt password`.
        let apr1 = PasswordHash::parse("$apr1$abcdefgh$FBwExRW4dCc8aL.OvjpIE1").unwrap();
        assert!(apr1.verify(b"password"));
        assert!(!apr1.verify(b"Password"));
        // ingress-nginx's basic auth example: user foo, password bar.
        let example = PasswordHash::parse("$apr1$OFG3Xybp$ckL0FHDAkoXYIlH9.cysT0").unwrap();
        assert!(example.verify(b"bar"));
        let md5 = PasswordHash::parse("$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/").unwrap();
        assert!(md5.verify(b"password"));
        assert!(!md5.verify(b""));
    }

    #[test]
    fn sha1_and_bcrypt_verify_and_other_hashes_are_refused() {
        let sha = PasswordHash::parse("{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=").unwrap();
        assert!(sha.verify(b"secret"));
        assert!(!sha.verify(b"secreT"));
        let bcrypt =
            PasswordHash::parse("$2y$05$9ek6BHz7XtHHNZwqvwkYg.0Md2Eg2CYOIfuzX4W2lhxQuAZNEw9lS")
                .unwrap();
        assert!(bcrypt.verify(b"secret"));
        assert!(!bcrypt.verify(b"wrong"));
        for bad in [
            "secret",
            "abJnggxhB/yWI",
            "$2y$05$short",
            "{SHA}not64",
            "$apr1$x",
        ] {
            assert!(PasswordHash::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn files_and_headers_read_as_htpasswd_and_browsers_write_them() {
        let (users, bad) = parse_file(
            "# team\nalice:{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n\nbob:plain\nno colon here\n",
        );
        assert_eq!(users.len(), 1);
        assert_eq!(bad.len(), 2);
        assert_eq!(
            credentials(b"Basic YWxpY2U6c2VjcmV0"),
            Some(("alice".into(), b"secret".to_vec()))
        );
        // A password may hold colons; other schemes and bad base64 are nobody.
        assert_eq!(
            credentials(b"basic YTpiOmM="),
            Some(("a".into(), b"b:c".to_vec()))
        );
        assert_eq!(credentials(b"Bearer YWxpY2U6c2VjcmV0"), None);
        assert_eq!(credentials(b"Basic !!!"), None);
    }
}

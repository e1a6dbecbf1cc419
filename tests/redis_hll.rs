//! `Hll` against a real redis-server: registers, counts and both encodings are
//! checked against what Redis itself computes, not against our own reading of
//! its source.
//!
//! Each test starts its own `redis-server` (no persistence, no TCP port) on a
//! Unix socket in a temporary directory of its own, so tests running at once can
//! never reach each other's server, and talks to it with the small RESP client
//! below (no new dependency).
//! Without a `redis-server` on the PATH (or at `$REDIS_SERVER`) the tests print
//! why and pass, unless `EH_REQUIRE_REDIS=1`, which makes that a failure (CI).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use engagehub::sketch::Hll;
use engagehub::sketch::hll::{REDIS_DENSE_LEN, REGISTERS};

/// A RESP2 reply.
#[derive(Debug, PartialEq)]
enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

/// A redis-server child process and one connection to it; on drop the server is
/// killed and its directory removed.
struct Redis {
    child: Child,
    dir: PathBuf,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new, empty directory of this process's own under the temp directory:
/// `create_dir` fails on an existing name, so no other test or process shares it.
fn private_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("eh-redis-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("create {}: {e}", dir.display()),
        }
    }
}

fn server_binary() -> String {
    std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

impl Redis {
    /// Starts a server, or `None` (with the reason printed) if there is none.
    fn start() -> Option<Redis> {
        let bin = server_binary();
        let found = Command::new(&bin)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            let why = format!("skipped: no {bin} to run (set REDIS_SERVER or install redis)");
            assert!(
                std::env::var("EH_REQUIRE_REDIS").as_deref() != Ok("1"),
                "{why}, and EH_REQUIRE_REDIS=1"
            );
            eprintln!("{why}");
            return None;
        }
        // No TCP port at all (--port 0): a Unix socket in a directory only this
        // test uses, so no other test can start a server at the same address.
        let dir = private_dir();
        let socket = dir.join("redis.sock");
        let mut child = Command::new(&bin)
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(&dir)
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        let stream = loop {
            match UnixStream::connect(&socket) {
                Ok(s) => break s,
                Err(e) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        let _ = std::fs::remove_dir_all(&dir);
                        panic!("redis-server exited at start ({status}): {e}");
                    }
                    if Instant::now() >= deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        let _ = std::fs::remove_dir_all(&dir);
                        panic!(
                            "redis-server on {} did not start within 10 s: {e}",
                            socket.display()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut redis = Redis {
            child,
            dir,
            reader: BufReader::new(stream.try_clone().expect("clone")),
            writer: stream,
        };
        assert_eq!(
            redis.cmd(&[b"PING"]),
            Reply::Status("PONG".into()),
            "redis-server answers"
        );
        Some(redis)
    }

    fn send(&mut self, args: &[&[u8]]) {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&out).expect("write to redis");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read from redis");
        assert!(line.ends_with("\r\n"), "short reply {line:?}");
        line.truncate(line.len() - 2);
        line
    }

    fn reply(&mut self) -> Reply {
        let line = self.line();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Reply::Status(rest.into()),
            "-" => Reply::Error(rest.into()),
            ":" => Reply::Int(rest.parse().expect("integer reply")),
            "$" => {
                let n: i64 = rest.parse().expect("bulk length");
                if n < 0 {
                    return Reply::Bulk(None);
                }
                let mut data = vec![0u8; n as usize + 2];
                self.reader.read_exact(&mut data).expect("bulk body");
                data.truncate(n as usize);
                Reply::Bulk(Some(data))
            }
            "*" => {
                let n: i64 = rest.parse().expect("array length");
                Reply::Array((0..n.max(0)).map(|_| self.reply()).collect())
            }
            _ => panic!("unknown reply {line:?}"),
        }
    }

    fn cmd(&mut self, args: &[&[u8]]) -> Reply {
        self.send(args);
        self.reply()
    }

    fn ok(&mut self, args: &[&[u8]]) {
        let r = self.cmd(args);
        assert!(
            matches!(r, Reply::Status(_) | Reply::Int(_)),
            "{:?}: {r:?}",
            String::from_utf8_lossy(args[0])
        );
    }

    fn get(&mut self, key: &str) -> Vec<u8> {
        match self.cmd(&[b"GET", key.as_bytes()]) {
            Reply::Bulk(Some(v)) => v,
            other => panic!("GET {key}: {other:?}"),
        }
    }

    fn set(&mut self, key: &str, value: &[u8]) {
        self.ok(&[b"SET", key.as_bytes(), value]);
    }

    fn pfcount(&mut self, keys: &[&str]) -> u64 {
        let mut args: Vec<&[u8]> = vec![b"PFCOUNT"];
        args.extend(keys.iter().map(|k| k.as_bytes()));
        match self.cmd(&args) {
            Reply::Int(n) => u64::try_from(n).expect("non-negative"),
            other => panic!("PFCOUNT {keys:?}: {other:?}"),
        }
    }

    /// `PFADD key` every id, 1000 per command, pipelined.
    fn pfadd(&mut self, key: &str, ids: &[Vec<u8>]) {
        let chunks: Vec<_> = ids.chunks(1000).collect();
        for chunk in &chunks {
            let mut args: Vec<&[u8]> = vec![b"PFADD", key.as_bytes()];
            args.extend(chunk.iter().map(|id| id.as_slice()));
            self.send(&args);
        }
        for _ in &chunks {
            assert!(matches!(self.reply(), Reply::Int(_)));
        }
    }
}

/// The failure this layout prevents: two tests at once used to pick the same
/// "free" port, share one server, and the first teardown killed the other's.
/// Servers started together are distinct, and stopping one leaves the other
/// answering with its own data.
#[test]
fn servers_started_together_are_independent() {
    let Some(mut a) = Redis::start() else { return };
    let Some(mut b) = Redis::start() else { return };
    assert_ne!(a.dir, b.dir);
    a.set("owner", b"a");
    b.set("owner", b"b");
    assert_eq!(a.get("owner"), b"a");
    drop(a);
    assert_eq!(b.cmd(&[b"PING"]), Reply::Status("PONG".into()));
    assert_eq!(b.get("owner"), b"b");
}

/// `n` ids starting at `from`: 18-digit Discord-like snowflakes, with every few
/// ids a short or odd one so all MurmurHash64A tail lengths occur.
fn ids(from: u64, n: u64) -> Vec<Vec<u8>> {
    (from..from + n)
        .map(|i| match i % 5 {
            0 => format!("u{i}").into_bytes(),
            1 => format!("user:{i}:\u{e9}").into_bytes(),
            _ => format!("{}", 100_000_000_000_000_000 + i * 7919).into_bytes(),
        })
        .collect()
}

fn hll_of(ids: &[Vec<u8>]) -> Hll {
    let mut h = Hll::new();
    ids.iter().for_each(|id| h.add(id));
    h
}

/// Register values of a dense or sparse Redis value, decoded by `Hll`.
fn registers_of(value: &[u8]) -> [u8; REGISTERS] {
    *Hll::from_redis(value)
        .expect("Redis's own value")
        .registers()
}

#[test]
fn single_ids_set_the_same_register_as_pfadd() {
    let Some(mut r) = Redis::start() else { return };
    let mut all = Vec::new();
    for len in 0..40usize {
        all.push((0..len).map(|i| (i * 31 + len) as u8).collect::<Vec<u8>>());
    }
    all.extend(ids(0, 300));
    for id in &all {
        r.ok(&[b"DEL", b"one"]);
        r.ok(&[b"PFADD", b"one", id]);
        let value = r.get("one");
        assert_eq!(value[4], 1, "a one-id key is sparse");
        let ours = hll_of(std::slice::from_ref(id));
        assert_eq!(&registers_of(&value), ours.registers(), "id {id:?}");
    }
}

#[test]
fn counts_equal_pfcount_sparse_and_dense() {
    let Some(mut r) = Redis::start() else { return };
    let sizes = [
        1u64, 2, 3, 10, 50, 100, 300, 1000, 2000, 3000, 5000, 10_000, 30_000, 50_000, 200_000,
    ];
    let mut saw = [false; 2];
    for &n in &sizes {
        let key = format!("n{n}");
        let items = ids(n * 1_000_000, n);
        r.pfadd(&key, &items);
        let value = r.get(&key);
        saw[usize::from(value[4])] = true;
        let redis_count = r.pfcount(&[&key]);
        let from_redis = Hll::from_redis(&value).expect("Redis's own value");
        let ours = hll_of(&items);
        assert_eq!(from_redis.registers(), ours.registers(), "n = {n}");
        assert_eq!(from_redis.count(), redis_count, "n = {n}, from_redis");
        assert_eq!(ours.count(), redis_count, "n = {n}, ours");
        // Our dense bytes, SET as a key, count the same under PFCOUNT.
        let mine = format!("mine{n}");
        r.set(&mine, &ours.to_redis());
        assert_eq!(r.pfcount(&[&mine]), redis_count, "n = {n}, to_redis");
        if value[4] == 0 {
            // Dense: the registers are the same bytes (the header's cached
            // cardinality is Redis's business).
            assert_eq!(value.len(), REDIS_DENSE_LEN);
            assert_eq!(value[16..], ours.to_redis()[16..], "n = {n}");
        }
    }
    assert_eq!(saw, [true, true], "both encodings were exercised");
}

/// The estimator, op for op: random register files (every value 0..=51,
/// including the all-zero, saturated and mixed extremes) SET into Redis count
/// the same under PFCOUNT, and Redis reads our values back unchanged.
#[test]
fn estimator_matches_pfcount_on_random_registers() {
    let Some(mut r) = Redis::start() else { return };
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for case in 0..300u64 {
        let mut h = Hll::new();
        // Hashes whose low 14 bits pick the register and whose next bits give
        // ranks geometric above a per-case floor, so the histograms vary from
        // nearly empty to nearly saturated.
        let adds = match case % 6 {
            0 => case * 3,
            1 => 1000 + case * 97,
            2 => 40_000,
            _ => next() % 2_000_000,
        };
        let floor = (case % 5) * 8; // ranks of at least floor + 1, up to 33
        // (higher floors give estimates beyond 2^63, which PFCOUNT replies as
        // negative numbers).
        for _ in 0..adds {
            let x = next();
            let shifted = (x >> 14) & !((1u64 << floor) - 1);
            h.add_hash((x & 0x3fff) | (shifted << 14));
        }
        if case == 1 {
            for i in (0..REGISTERS as u64).step_by(2) {
                h.add_hash(i); // half the registers at 51
            }
        }
        let bytes = h.to_redis();
        r.set("random", &bytes);
        assert_eq!(r.pfcount(&["random"]), h.count(), "case {case}");
        assert_eq!(r.get("random")[16..], bytes[16..], "case {case}");
    }
}

#[test]
fn pfmerge_with_our_bytes_is_our_merge() {
    let Some(mut r) = Redis::start() else { return };
    for (a_n, b_n, overlap) in [(100u64, 80u64, 30u64), (30_000, 40_000, 10_000)] {
        let a_ids = ids(0, a_n);
        let b_ids = ids(a_n - overlap, b_n);
        r.ok(&[b"DEL", b"a", b"b", b"u"]);
        r.pfadd("a", &a_ids);
        let ours_b = hll_of(&b_ids);
        r.set("b", &ours_b.to_redis());
        r.ok(&[b"PFMERGE", b"u", b"a", b"b"]);
        let mut union = hll_of(&a_ids);
        union.merge(&ours_b);
        assert_eq!(r.pfcount(&["u"]), union.count(), "{a_n} + {b_n}");
        assert_eq!(r.pfcount(&["a", "b"]), union.count(), "{a_n} + {b_n}");
        assert_eq!(&registers_of(&r.get("u")), union.registers());
        // Our sketch of the union of the ids is the same sketch.
        let mut all = a_ids.clone();
        all.extend(b_ids);
        assert_eq!(hll_of(&all), union);
        // Redis can keep adding to the key we wrote.
        r.pfadd("b", &ids(1_000_000_000, 10));
        let mut more = ours_b.clone();
        ids(1_000_000_000, 10).iter().for_each(|id| more.add(id));
        assert_eq!(r.pfcount(&["b"]), more.count());
    }
}

#[test]
fn redis_refuses_what_we_refuse_to_write() {
    // Our refusals mirror Redis's own checks where Redis has them: a wrong
    // length for a dense value is an invalid HLL to Redis too.
    let Some(mut r) = Redis::start() else { return };
    let mut bytes = hll_of(&ids(0, 10)).to_redis();
    bytes.pop();
    r.set("short", &bytes);
    assert!(matches!(r.cmd(&[b"PFCOUNT", b"short"]), Reply::Error(_)));
    assert!(Hll::from_redis(&bytes).is_err());
    let mut bad = hll_of(&ids(0, 10)).to_redis();
    bad[4] = 2;
    r.set("enc", &bad);
    assert!(matches!(r.cmd(&[b"PFCOUNT", b"enc"]), Reply::Error(_)));
    assert!(Hll::from_redis(&bad).is_err());
}

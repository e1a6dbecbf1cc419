use super::*;

fn tmp() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "eh-journal-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn opts(dir: &Path, streams: usize) -> Options<'_> {
    Options {
        dir,
        kind: "test",
        fingerprint: "a=1;b=2",
        streams,
        sync: SyncMode::Interval(Duration::from_secs(1)),
    }
}

type Log = Vec<(usize, u8, Vec<u8>)>;

fn open(o: &Options<'_>) -> Result<(Journal, Recovery, Option<Vec<u8>>, Log)> {
    let mut state = None;
    let mut log = Vec::new();
    let (j, r) = Journal::open(
        o,
        &mut |c| {
            state = c.map(|c| c.to_vec());
            Ok(())
        },
        &mut |s, t, p| {
            log.push((s, t, p.to_vec()));
            Ok(())
        },
    )?;
    Ok((j, r, state, log))
}

#[test]
fn records_survive_a_reopen_without_checkpoint_and_a_checkpoint_folds_them() {
    let dir = tmp();
    {
        let (mut j, r, state, log) = open(&opts(&dir, 2)).unwrap();
        assert_eq!((r, state, log.len()), (Recovery::default(), None, 0));
        let mut w0 = j.take_writer(0).unwrap();
        let mut w1 = j.take_writer(1).unwrap();
        assert!(j.take_writer(0).is_none());
        w0.append(1, &[b"hello", b" world"]).unwrap();
        w1.append(2, &[b""]).unwrap();
        w0.append(3, &[&[7u8; 3000][..]]).unwrap();
        j.sync().unwrap();
        // Dropped without a checkpoint, as a kill would leave it.
    }
    let (mut j, r, state, log) = open(&opts(&dir, 1)).unwrap();
    assert_eq!(state, None);
    assert_eq!(r.records, 3);
    assert_eq!(
        log,
        vec![
            (0, 1, b"hello world".to_vec()),
            (0, 3, vec![7u8; 3000]),
            (1, 2, Vec::new())
        ]
    );
    let mut w = j.take_writer(0).unwrap();
    j.checkpoint(&[w.position()], b"STATE").unwrap();
    w.append(9, &[b"after"]).unwrap();
    drop((w, j));
    // Only the new stream's segment is left, and the checkpoint.
    let logs = list_segments(&dir).unwrap();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let (_j, r, state, log) = open(&opts(&dir, 1)).unwrap();
    assert!(r.had_checkpoint);
    assert_eq!(state.as_deref(), Some(&b"STATE"[..]));
    assert_eq!(log, vec![(0, 9, b"after".to_vec())]);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torn_tail_is_truncated_and_counted() {
    let dir = tmp();
    {
        let (mut j, ..) = open(&opts(&dir, 1)).unwrap();
        let mut w = j.take_writer(0).unwrap();
        for i in 0..10u8 {
            w.append(i, &[&[i; 40][..]]).unwrap();
        }
    }
    // Tear the last record: flip a byte of its payload.
    let (_, _, path) = list_segments(&dir).unwrap().pop().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let last = HEADER + 9 * 56 + RECORD_HEADER + 5;
    bytes[last] ^= 0xff;
    fs::write(&path, &bytes).unwrap();
    let (_j, r, _, log) = open(&opts(&dir, 1)).unwrap();
    assert_eq!(log.len(), 9);
    assert_eq!((r.torn, r.records), (1, 9));
    assert!(r.torn_bytes > 0);
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn segments_roll_and_replay_in_order() {
    let dir = tmp();
    let payload = vec![1u8; 100_000];
    {
        let (mut j, ..) = open(&opts(&dir, 1)).unwrap();
        let mut w = j.take_writer(0).unwrap();
        for i in 0..40u32 {
            w.append(5, &[&i.to_le_bytes(), &payload]).unwrap();
        }
    }
    assert!(list_segments(&dir).unwrap().len() >= 3);
    let (_j, r, _, log) = open(&opts(&dir, 1)).unwrap();
    assert_eq!(r.records, 40);
    for (i, (_, _, p)) in log.iter().enumerate() {
        assert_eq!(&p[..4], &(i as u32).to_le_bytes());
    }
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_handle_another_kind_setting_or_version_is_refused() {
    let dir = tmp();
    let (mut j, ..) = open(&opts(&dir, 1)).unwrap();
    let w = j.take_writer(0).unwrap();
    j.checkpoint(&[w.position()], b"").unwrap();
    match open(&opts(&dir, 1)) {
        Err(Error::Busy(m)) => assert!(
            m.contains("in use") && m.contains(&std::process::id().to_string()),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    drop((w, j));
    let mut other = opts(&dir, 1);
    other.fingerprint = "a=1;b=3;c=4";
    match open(&other) {
        Err(Error::InvalidArgument(m)) => {
            assert!(
                m.contains("b: journal 2, this handle 3") && m.contains("c: journal none"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    other.fingerprint = "a=1;b=2";
    other.kind = "processor";
    assert!(
        matches!(open(&other), Err(Error::InvalidArgument(m)) if m.contains("belongs to a test"))
    );
    // Another format version.
    let path = dir.join("checkpoint");
    let mut bytes = fs::read(&path).unwrap();
    bytes[8] = 99;
    fs::write(&path, &bytes).unwrap();
    assert!(
        matches!(open(&opts(&dir, 1)), Err(Error::Corrupt(m)) if m.contains("format version 99"))
    );
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn always_mode_and_a_detached_journal() {
    let dir = tmp();
    let mut o = opts(&dir, 1);
    o.sync = SyncMode::Always;
    {
        let (mut j, ..) = open(&o).unwrap();
        let mut w = j.take_writer(0).unwrap();
        w.append(1, &[b"kept"]).unwrap();
        j.detach();
        w.append(2, &[b"not written"]).unwrap();
    }
    let (_j, _, _, log) = open(&o).unwrap();
    assert_eq!(log, vec![(0, 1, b"kept".to_vec())]);
    fs::remove_dir_all(&dir).unwrap();
}

//! Member log files: where they are, how they stay bounded, and how to read and follow them.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// The size above which a member's log is moved to `<member_id>.log.1`.
pub const DEFAULT_LOG_CAP: u64 = 1024 * 1024;
/// The most [`follow_log`] returns at once.
const MAX_CHUNK: u64 = 1024 * 1024;

/// The file a member's stdout and stderr go to.
pub fn log_path(log_dir: &Path, member_id: &str) -> PathBuf {
    log_dir.join(format!("{member_id}.log"))
}

fn rotated_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".1");
    PathBuf::from(name)
}

/// Opens a log for appending, so writers never overwrite each other or a truncation.
pub(crate) fn open_log(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Copies the log to `<log>.1` and empties it when it is larger than `cap`; true if it did.
/// The member keeps writing to the same file, which is why it is copied, not renamed.
pub(crate) fn rotate_if_over(path: &Path, cap: u64) -> io::Result<bool> {
    if std::fs::metadata(path)?.len() <= cap {
        return Ok(false);
    }
    std::fs::copy(path, rotated_path(path))?;
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

/// The last `tail_lines` lines of a member's log, reaching into the rotated part when needed;
/// empty when there is no log.
pub fn read_log(log_dir: &Path, member_id: &str, tail_lines: usize) -> String {
    let path = log_path(log_dir, member_id);
    let mut bytes = std::fs::read(rotated_path(&path)).unwrap_or_default();
    bytes.extend(std::fs::read(&path).unwrap_or_default());
    let start = tail_start(&bytes, tail_lines);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Where the last `lines` lines of `bytes` begin.
fn tail_start(bytes: &[u8], lines: usize) -> usize {
    if lines == 0 {
        return bytes.len();
    }
    // The final newline ends the last line rather than starting an empty one.
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let mut seen = 0;
    for (index, byte) in body.iter().enumerate().rev() {
        if *byte == b'\n' {
            seen += 1;
            if seen == lines {
                return index + 1;
            }
        }
    }
    0
}

/// Bytes of a log read by [`follow_log`], and the offset to pass to the next call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogChunk {
    pub data: Vec<u8>,
    pub next_offset: u64,
}

/// What a member wrote to its log since `offset` (0 for the start), at most 1 MiB at a time.
/// When the log was rotated since, the rest of the rotated copy comes first.
pub fn follow_log(log_dir: &Path, member_id: &str, offset: u64) -> io::Result<LogChunk> {
    let path = log_path(log_dir, member_id);
    let len = match std::fs::metadata(&path) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(LogChunk::default()),
        Err(error) => return Err(error),
    };
    let mut data = Vec::new();
    let mut from = offset;
    if len < offset {
        match read_range(&rotated_path(&path), offset, MAX_CHUNK, &mut data) {
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        from = 0;
    }
    let room = MAX_CHUNK.saturating_sub(data.len() as u64);
    let read = read_range(&path, from, room, &mut data)?;
    Ok(LogChunk {
        data,
        next_offset: from + read,
    })
}

fn read_range(path: &Path, from: u64, limit: u64, out: &mut Vec<u8>) -> io::Result<u64> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(from))?;
    let read = file.take(limit).read_to_end(out)?;
    Ok(read as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cairn-log-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn tails_lines() {
        let check = |text: &str, lines: usize, expected: &str| {
            let start = tail_start(text.as_bytes(), lines);
            assert_eq!(&text[start..], expected, "{text:?} tail {lines}");
        };
        check("a\nb\nc\n", 2, "b\nc\n");
        check("a\nb\nc", 2, "b\nc");
        check("a\nb\nc\n", 5, "a\nb\nc\n");
        check("a\nb\n", 0, "");
        check("", 3, "");
        check("\n\n", 1, "\n");
    }

    #[test]
    fn reads_and_follows_across_rotation() {
        let dir = scratch_dir("follow");
        let path = log_path(&dir, "m");
        let mut log = open_log(&path).expect("open");
        assert_eq!(
            follow_log(&dir, "none", 7).expect("missing"),
            LogChunk::default()
        );
        log.write_all(b"one\ntwo\n").expect("write");
        let first = follow_log(&dir, "m", 0).expect("follow");
        assert_eq!(
            (first.data.as_slice(), first.next_offset),
            (&b"one\ntwo\n"[..], 8)
        );
        log.write_all(b"three\n").expect("write");
        assert!(!rotate_if_over(&path, 100).expect("small log stays"));
        assert!(rotate_if_over(&path, 10).expect("rotate"));
        assert_eq!(std::fs::metadata(&path).expect("log").len(), 0);
        log.write_all(b"four\n").expect("write after rotation");
        assert_eq!(
            std::fs::metadata(&path).expect("log").len(),
            5,
            "append after truncation"
        );
        let second = follow_log(&dir, "m", first.next_offset).expect("follow");
        assert_eq!(String::from_utf8_lossy(&second.data), "three\nfour\n");
        assert_eq!(second.next_offset, 5);
        assert_eq!(read_log(&dir, "m", 2), "three\nfour\n");
        assert_eq!(read_log(&dir, "m", 100), "one\ntwo\nthree\nfour\n");
        assert_eq!(read_log(&dir, "none", 100), "");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

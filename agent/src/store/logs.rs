//! Step logs kept in the store, for a fleet: on the PostgreSQL store the node that runs a step
//! copies its log file there in pieces, so the API of any node serves any run's logs.
//!
//! A log in the store is the log file's bytes, byte for byte, in pieces keyed by their byte
//! offset (`log_chunks`): the pieces of a log are contiguous from offset 0 and each is written
//! once. [`crate::store::Db::append_log`] appends a piece only where the stored log ends (the
//! part of a piece already stored, after a write that was retried, is skipped; a piece past
//! the end is refused), so pieces arrive in order, complete and never twice. The pieces go
//! with their run (`ON DELETE CASCADE`) when retention deletes it.

use super::RunId;

/// A piece of a step's log to append: the log's bytes from `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogAppend {
    /// The run.
    pub run: RunId,
    /// The step (its id as the run's events name it).
    pub step: String,
    /// Where the piece starts in the log.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
}

/// What the store holds of a step's log from some offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRead {
    /// The bytes from the offset asked for, at most as many as asked for.
    pub data: Vec<u8>,
    /// How many bytes of the log the store holds in all (0: it holds none).
    pub length: u64,
}

/// An offset or a length as a column value.
pub(crate) fn to_column(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A column value as an offset or a length (never negative in the store).
pub(crate) fn from_column(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Where a piece goes in a log the store holds `length` bytes of: the bytes of `piece` to
/// append (`None`: nothing, the piece starts past the end and would leave a gap).
pub(crate) fn new_part(length: u64, piece: &LogAppend) -> Option<&[u8]> {
    if piece.offset > length {
        return None;
    }
    let skip = usize::try_from(length - piece.offset).unwrap_or(usize::MAX);
    Some(piece.data.get(skip..).unwrap_or_default())
}

/// Cuts the stored pieces `chunks` (offset, bytes; in offset order) to the bytes from `from`,
/// at most `max` of them, stopping at a gap.
pub(crate) fn assemble(chunks: Vec<(u64, Vec<u8>)>, from: u64, max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = from;
    for (offset, data) in chunks {
        let end = offset + data.len() as u64;
        if end <= at {
            continue;
        }
        if offset > at {
            break;
        }
        let skip = usize::try_from(at - offset).unwrap_or(usize::MAX);
        let room = max - out.len();
        let take = &data[skip..];
        let take = &take[..take.len().min(room)];
        out.extend_from_slice(take);
        at += take.len() as u64;
        if out.len() >= max {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(offset: u64, data: &[u8]) -> LogAppend {
        LogAppend {
            run: RunId(1),
            step: "s".into(),
            offset,
            data: data.to_vec(),
        }
    }

    #[test]
    fn a_piece_lands_only_where_the_log_ends() {
        assert_eq!(new_part(0, &piece(0, b"abc")), Some(&b"abc"[..]));
        assert_eq!(new_part(2, &piece(0, b"abc")), Some(&b"c"[..]));
        assert_eq!(new_part(5, &piece(0, b"abc")), Some(&b""[..]));
        assert_eq!(new_part(3, &piece(4, b"abc")), None);
    }

    #[test]
    fn stored_pieces_are_cut_to_the_range_asked_for() {
        let chunks = || {
            vec![
                (0, b"abc".to_vec()),
                (3, b"def".to_vec()),
                (6, b"g".to_vec()),
            ]
        };
        assert_eq!(assemble(chunks(), 0, usize::MAX), b"abcdefg");
        assert_eq!(assemble(chunks(), 2, 3), b"cde");
        assert_eq!(assemble(chunks(), 7, 10), b"");
        assert_eq!(assemble(chunks(), 1, 0), b"");
        // A gap ends what is read.
        assert_eq!(
            assemble(vec![(0, b"ab".to_vec()), (5, b"x".to_vec())], 0, 9),
            b"ab"
        );
    }
}

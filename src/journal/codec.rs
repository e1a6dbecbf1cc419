//! Little-endian byte encoding for journal records and checkpoints: [`Put`] appends,
//! [`Get`] reads with bounds checks (every failure is [`Error::Corrupt`] naming what
//! was being read).

use crate::error::{Error, Result};

/// Appends values to a byte vector.
pub trait Put {
    /// One byte.
    fn put_u8(&mut self, v: u8);
    /// Four bytes, little-endian.
    fn put_u32(&mut self, v: u32);
    /// Eight bytes, little-endian.
    fn put_u64(&mut self, v: u64);
    /// Eight bytes, little-endian (two's complement).
    fn put_i64(&mut self, v: i64) {
        self.put_u64(v as u64);
    }
    /// The eight bytes of the double's bit pattern (exact).
    fn put_f64(&mut self, v: f64) {
        self.put_u64(v.to_bits());
    }
    /// A u32 length, then the bytes.
    fn put_bytes(&mut self, v: &[u8]);
    /// [`Put::put_bytes`] of the UTF-8.
    fn put_str(&mut self, v: &str) {
        self.put_bytes(v.as_bytes());
    }
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_bytes(&mut self, v: &[u8]) {
        self.put_u32(v.len() as u32);
        self.extend_from_slice(v);
    }
}

/// Reads values from a byte slice, front to back.
pub struct Get<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl<'a> Get<'a> {
    /// A reader of `bytes`; `what` names them in error messages.
    pub fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Get { bytes, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(Error::corrupt(format!(
                "{}: {} bytes missing",
                self.what,
                n - self.bytes.len()
            )));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    /// One byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    /// Four bytes, little-endian.
    pub fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Eight bytes, little-endian.
    pub fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    /// Eight bytes as an i64.
    pub fn i64(&mut self) -> Result<i64> {
        Ok(self.u64()? as i64)
    }

    /// Eight bytes as an f64's bits.
    pub fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_bits(self.u64()?))
    }

    /// A u32 length and that many bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// [`Get::bytes`] as UTF-8.
    pub fn str(&mut self) -> Result<&'a str> {
        let what = self.what;
        std::str::from_utf8(self.bytes()?)
            .map_err(|_| Error::corrupt(format!("{what}: a string is not UTF-8")))
    }

    /// A count of items each at least `min_item_bytes` long, refused when the bytes
    /// left could not hold that many (so a corrupt count cannot make a reader
    /// reserve gigabytes).
    pub fn count(&mut self, min_item_bytes: usize) -> Result<usize> {
        let n = self.u64()?;
        let room = self.bytes.len() / min_item_bytes.max(1);
        if n > room as u64 {
            return Err(Error::corrupt(format!(
                "{}: {n} items announced, room for {room}",
                self.what
            )));
        }
        Ok(n as usize)
    }

    /// True when everything was read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Fails unless everything was read.
    pub fn finish(&self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(Error::corrupt(format!(
                "{}: {} bytes left over",
                self.what,
                self.bytes.len()
            )))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_short_input_is_corrupt() {
        let mut v = Vec::new();
        v.put_u8(7);
        v.put_u32(0xdead_beef);
        v.put_i64(-5);
        v.put_f64(-0.0);
        v.put_str("héllo");
        let mut g = Get::new(&v, "test");
        assert_eq!(g.u8().unwrap(), 7);
        assert_eq!(g.u32().unwrap(), 0xdead_beef);
        assert_eq!(g.i64().unwrap(), -5);
        assert_eq!(g.f64().unwrap().to_bits(), (-0.0f64).to_bits());
        assert_eq!(g.str().unwrap(), "héllo");
        g.finish().unwrap();
        assert!(matches!(g.u8(), Err(Error::Corrupt(_))));
        let mut huge = Vec::new();
        huge.put_u64(u64::MAX);
        assert!(matches!(
            Get::new(&huge, "t").count(1),
            Err(Error::Corrupt(_))
        ));
    }
}

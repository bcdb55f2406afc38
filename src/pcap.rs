//! A minimal pcap writer (the classic format, microsecond timestamps) for `flowdog gen pcap` and
//! the simulator's capture.

use std::io::{self, Write};
use std::time::Duration;

/// Link types used here.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// Raw IPv4 or IPv6 packets, no link-layer header.
pub const LINKTYPE_RAW: u32 = 101;

pub struct PcapWriter<W: Write> {
    w: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header: magic, version 2.4, no zone, snaplen 65535, `linktype`.
    pub fn new(mut w: W, linktype: u32) -> io::Result<Self> {
        w.write_all(&0xa1b2_c3d4u32.to_le_bytes())?;
        w.write_all(&2u16.to_le_bytes())?;
        w.write_all(&4u16.to_le_bytes())?;
        w.write_all(&[0u8; 8])?;
        w.write_all(&65535u32.to_le_bytes())?;
        w.write_all(&linktype.to_le_bytes())?;
        Ok(PcapWriter { w })
    }

    /// One record, `ts` since the epoch (or any origin).
    pub fn write(&mut self, ts: Duration, data: &[u8]) -> io::Result<()> {
        let len = data.len() as u32;
        self.w.write_all(&(ts.as_secs() as u32).to_le_bytes())?;
        self.w.write_all(&ts.subsec_micros().to_le_bytes())?;
        self.w.write_all(&len.to_le_bytes())?;
        self.w.write_all(&len.to_le_bytes())?;
        self.w.write_all(data)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_record_layout() {
        let mut w = PcapWriter::new(Vec::new(), LINKTYPE_RAW).unwrap();
        w.write(Duration::from_micros(3_000_007), &[0x45, 0, 0, 20]).unwrap();
        let b = w.w;
        assert_eq!(b.len(), 24 + 16 + 4);
        assert_eq!(&b[..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(b[20..24].try_into().unwrap()), 101);
        assert_eq!(u32::from_le_bytes(b[24..28].try_into().unwrap()), 3);
        assert_eq!(u32::from_le_bytes(b[28..32].try_into().unwrap()), 7);
        assert_eq!(&b[40..], &[0x45, 0, 0, 20]);
    }
}

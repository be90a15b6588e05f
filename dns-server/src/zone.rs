//! The static part of the zone: an RFC 1035 zone file loaded into a hickory-server catalog, plus what
//! the hot path needs to answer without it (the apex, the negative-answer SOA as wire bytes, and the
//! set of names that exist).

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinEncodable as _, BinEncoder};
use hickory_proto::serialize::txt::Parser;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneType};

/// A zone file larger than this is refused.
pub const ZONE_BYTES_MAX: u64 = 16 << 20;

/// The loaded zone.
pub struct Zone {
    /// The apex, lower case, without the trailing dot.
    pub apex: String,
    /// Every owner name in the zone file, lower case, without the trailing dot.
    pub names: HashSet<Vec<u8>>,
    /// The SOA record, encoded (owner uncompressed), its TTL set to min(TTL, MINIMUM) for negative
    /// answers (RFC 2308 5).
    pub soa_wire: Vec<u8>,
    /// hickory-server's catalog with the zone's static records.
    pub catalog: Catalog,
}

impl std::fmt::Debug for Zone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Zone")
            .field("apex", &self.apex)
            .field("names", &self.names.len())
            .finish_non_exhaustive()
    }
}

/// Lower case, no trailing dot.
fn key(name: &Name) -> String {
    let s = name.to_ascii().to_ascii_lowercase();
    s.strip_suffix('.').unwrap_or(&s).to_owned()
}

impl Zone {
    /// Parses and loads a zone file. `origin` is the policy's zone (the file's `$ORIGIN` may be
    /// left out; when present it must agree).
    pub fn load(path: &Path, origin: &str) -> anyhow::Result<Zone> {
        let meta = std::fs::metadata(path).with_context(|| format!("{}: cannot read", path.display()))?;
        if meta.len() > ZONE_BYTES_MAX {
            bail!("{}: larger than {ZONE_BYTES_MAX} bytes", path.display());
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        Zone::parse(&text, Some(path), origin)
    }

    pub fn parse(text: &str, path: Option<&Path>, origin: &str) -> anyhow::Result<Zone> {
        let label = path.map_or_else(|| "zone".to_owned(), |p| p.display().to_string());
        let origin_name =
            Name::from_ascii(origin).with_context(|| format!("{label}: bad origin {origin:?}"))?;
        let (name, mut records) = Parser::new(text, path.map(Path::to_path_buf), Some(origin_name.clone()))
            .parse()
            .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
        if key(&name) != key(&origin_name) {
            bail!("{label}: zone origin {name} is not the policy's zone {origin}");
        }
        let mut names = HashSet::new();
        let mut soa_wire = None;
        // RFC 2308 5: negative answers carry the SOA with TTL min(TTL, MINIMUM). hickory puts the
        // SOA record in them as stored, so it is stored with that TTL.
        for (k, rrset) in &mut records {
            if k.record_type == RecordType::SOA {
                let min = rrset.records_without_rrsigs().find_map(|r| match &r.data {
                    RData::SOA(soa) => Some(soa.minimum),
                    _ => None,
                });
                if let Some(min) = min
                    && rrset.ttl() > min
                {
                    rrset.set_ttl(min);
                }
            }
        }
        for (k, rrset) in &records {
            let owner = Name::from(k.name.clone());
            if !owner.zone_of(&origin_name) && !origin_name.zone_of(&owner) {
                bail!("{label}: {owner} is outside the zone {origin}");
            }
            names.insert(key(&owner).into_bytes());
            if k.record_type == RecordType::SOA {
                let rec = rrset.records_without_rrsigs().next().context("empty SOA set")?;
                let RData::SOA(soa) = &rec.data else {
                    bail!("{label}: SOA record without SOA data")
                };
                let mut r = rec.clone();
                r.ttl = r.ttl.min(soa.minimum);
                let mut buf = Vec::new();
                let mut enc = BinEncoder::new(&mut buf);
                // No compression: the bytes are pasted into responses at another offset.
                enc.set_canonical_form(true);
                r.emit(&mut enc)
                    .map_err(|e| anyhow::anyhow!("{label}: cannot encode the SOA: {e}"))?;
                soa_wire = Some(buf);
            }
        }
        let Some(soa_wire) = soa_wire else {
            bail!("{label}: no SOA record at the apex {origin}")
        };
        if !records
            .keys()
            .any(|k| k.record_type == RecordType::NS && key(&Name::from(k.name.clone())) == key(&origin_name))
        {
            bail!("{label}: no NS records at the apex {origin}");
        }
        let handler = InMemoryZoneHandler::<TokioRuntimeProvider>::new(
            origin_name.clone(),
            records,
            ZoneType::Primary,
            AxfrPolicy::Deny,
        )
        .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
        let mut catalog = Catalog::new();
        catalog.upsert(origin_name.into(), vec![Arc::new(handler)]);
        Ok(Zone {
            apex: key(&Name::from_ascii(origin)?),
            names,
            soa_wire,
            catalog,
        })
    }

    /// Whether `name` (lower case, no trailing dot) is the apex or below it.
    #[must_use]
    pub fn contains(&self, name: &[u8]) -> bool {
        let apex = self.apex.as_bytes();
        name == apex
            || (name.len() > apex.len() && name.ends_with(apex) && name[name.len() - apex.len() - 1] == b'.')
    }
}

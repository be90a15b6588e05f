//! `GeoIP` from a `MaxMind` City or Country database: country, continent and location of a client.
//!
//! The record type borrows from the database and names only the fields the engine uses, so a lookup
//! does not allocate.

use std::net::IpAddr;
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize;
use steering_core::geo::{Continent, Country, GeoPoint};

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow, default)]
    country: Option<Code<'a>>,
    #[serde(borrow, default)]
    continent: Option<ContinentCode<'a>>,
    #[serde(default)]
    location: Option<Location>,
}

#[derive(Deserialize)]
struct Code<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct ContinentCode<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

#[derive(Deserialize)]
struct Location {
    #[serde(default)]
    latitude: Option<f64>,
    #[serde(default)]
    longitude: Option<f64>,
}

/// What `GeoIP` knows about an address.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Place {
    pub country: Option<Country>,
    pub continent: Option<Continent>,
    pub location: Option<GeoPoint>,
}

pub struct Geo {
    reader: maxminddb::Reader<Vec<u8>>,
}

impl std::fmt::Debug for Geo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Geo")
            .field("database_type", &self.reader.metadata.database_type)
            .finish()
    }
}

impl Geo {
    pub fn open(path: &Path) -> anyhow::Result<Geo> {
        let reader = maxminddb::Reader::open_readfile(path)
            .with_context(|| format!("{}: not a MaxMind database", path.display()))?;
        Ok(Geo { reader })
    }

    /// The place of `addr`; empty when the database does not know it.
    pub fn lookup(&self, addr: IpAddr) -> Place {
        let Ok(Some(r)) = self.reader.lookup::<Record<'_>>(addr) else {
            return Place::default();
        };
        Place {
            country: r.country.and_then(|c| c.iso_code).and_then(Country::parse),
            continent: r.continent.and_then(|c| c.code).and_then(Continent::parse),
            location: r.location.and_then(|l| {
                Some(GeoPoint {
                    lat: l.latitude?,
                    lon: l.longitude?,
                })
            }),
        }
    }
}

//! A place in a stream as the command line names it: `earliest`, `latest`, an offset, a time
//! (RFC 3339) or an age (`15m`: that long ago).

use std::str::FromStr;
use std::time::SystemTime;

use flowstream_core::StartFrom;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place(pub(crate) StartFrom);

impl FromStr for Place {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let place = match text {
            "earliest" => StartFrom::Earliest,
            "latest" => StartFrom::Latest,
            "" => {
                return Err(
                    "no place given: write earliest, latest, an offset, a time or an age"
                        .to_owned(),
                );
            }
            _ if text.starts_with('-') => {
                return Err(format!(
                    "{text:?}: offsets start at 1 (for an age, write it without a sign: 15m)"
                ));
            }
            _ if text.bytes().all(|b| b.is_ascii_digit()) => StartFrom::Offset(
                text.parse()
                    .map_err(|_| format!("{text:?} is too large for an offset"))?,
            ),
            _ => match humantime::parse_rfc3339_weak(text) {
                Ok(time) => StartFrom::Time(time),
                Err(_) => match humantime::parse_duration(text) {
                    Ok(age) => StartFrom::Time(
                        SystemTime::now()
                            .checked_sub(age)
                            .unwrap_or(SystemTime::UNIX_EPOCH),
                    ),
                    Err(_) => {
                        return Err(format!(
                            "{text:?} is not a place in a stream: write earliest, latest, an \
                             offset (42), a UTC time (2026-12-06T10:00:00Z) or an age (15m)"
                        ));
                    }
                },
            },
        };
        Ok(Place(place))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_way_of_naming_a_place() {
        assert_eq!("earliest".parse(), Ok(Place(StartFrom::Earliest)));
        assert_eq!("latest".parse(), Ok(Place(StartFrom::Latest)));
        assert_eq!("42".parse(), Ok(Place(StartFrom::Offset(42))));
        let at = humantime::parse_rfc3339("2026-12-06T10:00:00Z").expect("time");
        assert_eq!(
            "2026-12-06T10:00:00Z".parse(),
            Ok(Place(StartFrom::Time(at)))
        );
        let Ok(Place(StartFrom::Time(ago))) = "15m".parse::<Place>() else {
            panic!("an age is a time");
        };
        let age = SystemTime::now().duration_since(ago).expect("in the past");
        assert!(age >= Duration::from_secs(900) && age < Duration::from_secs(960));
        for bad in ["-3", "soon", "", "99999999999999999999999"] {
            assert!(bad.parse::<Place>().is_err(), "{bad:?}");
        }
    }
}

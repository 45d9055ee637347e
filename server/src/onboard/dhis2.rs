//! The DHIS2 organisation-unit export (`/api/organisationUnits.csv`, or a spreadsheet saved
//! from it) mapped onto the facility tree, so a country running DHIS2 brings its tree as it is.
//!
//! Columns are matched by name, case-insensitively, and extra columns are ignored: `id` (or
//! `uid`) and `name` are required; `code`, `shortName`, `parent` (or `parent.id`, `parentId`),
//! `level`, `path` (`/uid1/uid2/…`), `openingDate`, `closedDate`, `featureType`, `coordinates`
//! (`[lon,lat]`) or `geometry` (GeoJSON) are used when present. The uid becomes the facility's
//! external id and, when the unit has no code, its code. The level gives the facility kind
//! through a [`LevelMap`]; a level mapped to `skip` is left out and its children hang from the
//! nearest kept ancestor.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use super::Problem;
use super::format::{Named, Record, Table};
use super::rows::{FacilityRow, Located, ParentRef, Rows, parse_date, reason_of};
use crate::domain::{FacilityKind, validate};

/// Which facility kind each DHIS2 level becomes (`None` = skip the level). Levels deeper than
/// the deepest one listed take its mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelMap {
    levels: BTreeMap<u32, Option<FacilityKind>>,
}

impl Default for LevelMap {
    /// 1 national store, 2 state store, 3 district store, 4 and deeper cold-chain point.
    fn default() -> Self {
        LevelMap {
            levels: BTreeMap::from([
                (1, Some(FacilityKind::NationalStore)),
                (2, Some(FacilityKind::StateStore)),
                (3, Some(FacilityKind::DistrictStore)),
                (4, Some(FacilityKind::ColdChainPoint)),
            ]),
        }
    }
}

impl LevelMap {
    /// The kind for a level; `None` when the level is skipped.
    pub fn kind(&self, level: u32) -> Option<FacilityKind> {
        if let Some(k) = self.levels.get(&level) {
            return *k;
        }
        self.levels.range(..level).next_back().and_then(|(_, k)| *k)
    }
}

impl FromStr for LevelMap {
    type Err = String;

    /// Parses `LEVEL=KIND[,LEVEL=KIND…]` (KIND a facility kind or `skip`), applied over the default.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut map = LevelMap::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (level, kind) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' is not LEVEL=KIND (for example 5=session_site)"))?;
            let level: u32 = level
                .trim()
                .parse()
                .ok()
                .filter(|l| *l >= 1)
                .ok_or_else(|| format!("'{level}' is not a level (1, 2, 3, …)"))?;
            let kind = match kind.trim() {
                k if k.eq_ignore_ascii_case("skip") => None,
                k => Some(FacilityKind::parse_name(k)?),
            };
            map.levels.insert(level, kind);
        }
        Ok(map)
    }
}

/// One organisation unit as read.
#[derive(Debug, Clone)]
struct Unit {
    file: String,
    line: u64,
    uid: String,
    /// The facility code (the unit's code, or its uid); `None` when the code is unusable.
    code: Option<String>,
    parent: Option<String>,
    level: Option<u32>,
    /// Everything but the place in the tree parsed.
    row: Option<FacilityRow>,
}

/// Column names as DHIS2 writes them, lower-cased, with accepted aliases.
fn column(t: &Table, names: &[&'static str]) -> Option<&'static str> {
    names.iter().copied().find(|n| t.has(n))
}

/// Maps the organisation units of `t` into facility rows.
pub fn parse(t: &Table, levels: &LevelMap, rows: &mut Rows, problems: &mut Vec<Problem>) {
    let uid_col = column(t, &["id", "uid"]);
    let name_col = column(t, &["name", "shortname", "displayname"]);
    let (Some(uid_col), Some(name_col)) = (uid_col, name_col) else {
        problems.push(Problem::new(
            &t.file,
            1,
            "",
            "a DHIS2 organisation-unit export needs an id (uid) and a name column",
        ));
        return;
    };
    let parent_col = column(t, &["parent", "parent.id", "parentid", "parent_id"]);
    let mut units: Vec<Unit> = Vec::with_capacity(t.len());
    let mut by_uid: HashMap<String, usize> = HashMap::new();
    for rec in t.records() {
        let Some(u) = read_unit(&rec, uid_col, name_col, parent_col, problems) else { continue };
        if let Some(&first) = by_uid.get(&u.uid) {
            problems
                .push(rec.problem(uid_col, format!("duplicate uid {} (first on line {})", u.uid, units[first].line)));
            continue;
        }
        by_uid.insert(u.uid.clone(), units.len());
        units.push(u);
    }
    // Levels missing from the file follow from the parent chain inside the file.
    for i in 0..units.len() {
        if units[i].level.is_some() {
            continue;
        }
        let mut depth = 1;
        let mut at = i;
        let mut known = None;
        while let Some(p) = units[at].parent.as_ref().and_then(|p| by_uid.get(p)) {
            depth += 1;
            at = *p;
            if let Some(l) = units[at].level {
                known = Some(l + depth - 1);
                break;
            }
            if usize::try_from(depth).unwrap_or(usize::MAX) > units.len() {
                break;
            }
        }
        let level = known.or_else(|| units[at].parent.is_none().then_some(depth));
        if level.is_none() {
            problems.push(Problem::new(
                &units[i].file,
                units[i].line,
                "level",
                "cannot tell the level: export the level or path column too",
            ));
        }
        units[i].level = level;
    }
    for i in 0..units.len() {
        let u = &units[i];
        let kind = match u.level {
            Some(l) => levels.kind(l),
            None => {
                mark_broken(rows, u);
                continue;
            }
        };
        let Some(kind) = kind else { continue };
        let Some(mut row) = u.row.clone() else {
            mark_broken(rows, u);
            continue;
        };
        row.kind = kind;
        // Up to the nearest kept ancestor; a cycle is left for the tree check to report.
        let mut parent = u.parent.clone();
        let mut steps = 0;
        while let Some(p) = parent.as_ref().and_then(|p| by_uid.get(p)) {
            let pu = &units[*p];
            if pu.level.is_none_or(|l| levels.kind(l).is_some()) || steps > units.len() {
                break;
            }
            parent = pu.parent.clone();
            steps += 1;
        }
        row.parent = match parent {
            None => ParentRef::Root,
            Some(p) => match by_uid.get(&p) {
                Some(&pi) => match &units[pi].code {
                    Some(code) => ParentRef::Code(code.clone()),
                    // The parent's own row is already reported; this one is not planned.
                    None => {
                        mark_broken(rows, u);
                        continue;
                    }
                },
                None => ParentRef::ExternalId(p),
            },
        };
        rows.facilities.push(Located { file: u.file.clone(), line: u.line, row });
    }
}

fn mark_broken(rows: &mut Rows, u: &Unit) {
    if let Some(c) = &u.code {
        rows.broken.facilities.insert(c.clone());
    }
}

fn read_unit(
    rec: &Record<'_>,
    uid_col: &'static str,
    name_col: &'static str,
    parent_col: Option<&'static str>,
    problems: &mut Vec<Problem>,
) -> Option<Unit> {
    let before = problems.len();
    let uid = rec.get(uid_col).to_owned();
    if uid.is_empty() {
        problems.push(rec.problem(uid_col, "is required"));
        return None;
    }
    if let Err(e) = validate::code(uid_col, &uid) {
        problems.push(rec.problem(uid_col, reason_of(e)));
        return None;
    }
    let code_raw = rec.get("code");
    let code = if code_raw.is_empty() {
        Some(uid.clone())
    } else {
        match validate::code("code", code_raw) {
            Ok(c) => Some(c),
            Err(e) => {
                problems.push(rec.problem("code", reason_of(e)));
                None
            }
        }
    };
    let mut name = rec.get(name_col).to_owned();
    if name.is_empty() {
        name = rec.get("shortname").to_owned();
    }
    let name = match validate::text(name_col, &name, 200) {
        Ok(n) => Some(n),
        Err(e) => {
            problems.push(rec.problem(name_col, reason_of(e)));
            None
        }
    };
    let path: Vec<&str> = rec.get("path").split('/').filter(|s| !s.is_empty()).collect();
    let mut parent = parent_col.map(|c| rec.get(c).to_owned()).filter(|p| !p.is_empty());
    if parent.is_none() && path.len() >= 2 {
        parent = path.get(path.len() - 2).map(|p| (*p).to_owned());
    }
    let level = match rec.get("level") {
        "" => (!path.is_empty()).then(|| u32::try_from(path.len()).unwrap_or(u32::MAX)),
        l => match l.parse::<u32>() {
            Ok(n) if n >= 1 => Some(n),
            _ => {
                problems.push(rec.problem("level", format!("'{l}' is not a level (1, 2, 3, …)")));
                return None;
            }
        },
    };
    for col in ["openingdate", "closeddate"] {
        let v = rec.get(col);
        if !v.is_empty()
            && let Err(e) = parse_date(v.get(..10).unwrap_or(v))
        {
            problems.push(rec.problem(col, e));
        }
    }
    let active = rec.get("closeddate").is_empty();
    let (latitude, longitude) = match point(rec) {
        Ok(p) => p,
        Err((col, e)) => {
            problems.push(rec.problem(col, e));
            (None, None)
        }
    };
    let ok = problems.len() == before;
    let row = match (ok, name) {
        (true, Some(name)) => Some(FacilityRow {
            code: code.clone().unwrap_or_default(),
            parent: ParentRef::Root,
            parent_column: parent_col.unwrap_or("path"),
            kind_column: "level",
            // DHIS2's identity is the uid: a unit that gains a code later is still the same unit.
            keyed_by_external_id: true,
            kind: FacilityKind::ColdChainPoint,
            name,
            gln: String::new(),
            external_id: uid.clone(),
            latitude,
            longitude,
            active,
        }),
        _ => None,
    };
    Some(Unit { file: rec.file.to_owned(), line: rec.line, uid, code, parent, level, row })
}

type Point = (Option<f64>, Option<f64>);

/// A point's (latitude, longitude) from `coordinates` (`[lon,lat]`) or `geometry` (GeoJSON);
/// areas (polygons) have none.
fn point(rec: &Record<'_>) -> Result<Point, (&'static str, String)> {
    let feature = rec.get("featuretype");
    if !feature.is_empty() && !feature.eq_ignore_ascii_case("point") {
        return Ok((None, None));
    }
    let (col, lonlat) = match (rec.get("coordinates"), rec.get("geometry")) {
        ("", "") => return Ok((None, None)),
        (c, "") => ("coordinates", serde_json::from_str::<Vec<f64>>(c).ok()),
        (_, g) => {
            let v: Option<serde_json::Value> = serde_json::from_str(g).ok();
            match v.as_ref().and_then(|v| v.get("type")).and_then(|t| t.as_str()) {
                Some(t) if !t.eq_ignore_ascii_case("point") => return Ok((None, None)),
                _ => {}
            }
            let coords = v.and_then(|v| v.get("coordinates").cloned());
            ("geometry", coords.and_then(|c| serde_json::from_value::<Vec<f64>>(c).ok()))
        }
    };
    match lonlat.as_deref() {
        Some(&[lon, lat]) if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) => {
            Ok((Some(lat), Some(lon)))
        }
        Some(&[_, _]) => Err((col, "the point lies outside -90..90 latitude, -180..180 longitude".to_owned())),
        _ => Err((col, "is not a point [longitude,latitude]".to_owned())),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::onboard::format::read_table;

    fn run(text: &str, levels: &LevelMap) -> (Rows, Vec<Problem>) {
        let mut p = Vec::new();
        let t = read_table("organisationUnits.csv", text.as_bytes(), &mut p).unwrap();
        let mut rows = Rows::default();
        parse(&t, levels, &mut rows, &mut p);
        (rows, p)
    }

    const TREE: &str = "id,code,name,shortName,parent,level,path,openingDate,closedDate,featureType,coordinates\n\
        ImspTQPwCqd,SL,Sierra Leone,SL,,1,/ImspTQPwCqd,1994-01-01T00:00:00.000,,NONE,\n\
        O6uvpzGd5pu,,Bo,Bo,ImspTQPwCqd,2,/ImspTQPwCqd/O6uvpzGd5pu,1970-01-01,,POLYGON,\"[[[1,2]]]\"\n\
        YuQRtpLP10I,OU_539,Badjia,,O6uvpzGd5pu,3,/ImspTQPwCqd/O6uvpzGd5pu/YuQRtpLP10I,,,,\n\
        DiszpKrYNg8,OU_559,Ngelehun CHC,Ngelehun,YuQRtpLP10I,4,/ImspTQPwCqd/O6uvpzGd5pu/YuQRtpLP10I/DiszpKrYNg8,,2020-05-01,POINT,\"[-11.4197,8.1039]\"\n";

    #[test]
    fn maps_levels_uids_and_points() {
        let (rows, p) = run(TREE, &LevelMap::default());
        assert!(p.is_empty(), "{p:?}");
        let f: Vec<_> = rows.facilities.iter().map(|l| &l.row).collect();
        assert_eq!(f.len(), 4);
        assert_eq!(
            (f[0].code.as_str(), f[0].kind, &f[0].parent),
            ("SL", FacilityKind::NationalStore, &ParentRef::Root)
        );
        assert_eq!(f[1].code, "O6uvpzGd5pu", "no code: the uid is the code");
        assert_eq!(f[1].latitude, None, "polygons have no point");
        assert_eq!(f[2].parent, ParentRef::Code("O6uvpzGd5pu".into()));
        assert_eq!(f[3].external_id, "DiszpKrYNg8");
        assert_eq!(f[3].kind, FacilityKind::ColdChainPoint);
        assert_eq!((f[3].latitude, f[3].longitude), (Some(8.1039), Some(-11.4197)));
        assert!(!f[3].active, "a closed unit is inactive");
    }

    #[test]
    fn skipped_levels_reparent_to_the_kept_ancestor() {
        let levels: LevelMap = "3=skip,4=district_store".parse().unwrap();
        assert_eq!(levels.kind(7), Some(FacilityKind::DistrictStore));
        let (rows, p) = run(TREE, &levels);
        assert!(p.is_empty(), "{p:?}");
        let last = &rows.facilities.last().unwrap().row;
        assert_eq!(last.parent, ParentRef::Code("O6uvpzGd5pu".into()));
        assert_eq!(rows.facilities.len(), 3);
        assert!("0=skip".parse::<LevelMap>().is_err());
        assert!("2=warehouse".parse::<LevelMap>().is_err());
    }

    #[test]
    fn levels_from_path_or_chain_and_bad_values() {
        let (rows, p) = run("uid,name,parent\nA,Root,\nB,Child,A\nC,Grandchild,B\nD,Orphan,Z\n", &LevelMap::default());
        let kinds: Vec<_> = rows.facilities.iter().map(|f| f.row.kind).collect();
        assert_eq!(kinds, vec![FacilityKind::NationalStore, FacilityKind::StateStore, FacilityKind::DistrictStore]);
        assert_eq!((p.len(), p[0].line, p[0].column.as_str()), (1, 5, "level"), "{p:?}");
        let (_, p) = run(
            "id,name,level,closedDate,featureType,coordinates\nA,X,1,2020-13-01,POINT,\"[200,1]\"\n",
            &LevelMap::default(),
        );
        let cols: Vec<&str> = p.iter().map(|p| p.column.as_str()).collect();
        assert_eq!(cols, vec!["closedDate", "coordinates"], "{p:?}");
    }
}

//! Looking up past versions, and finding the common ancestor of two versions in the `parent_versions` DAG.

use std::collections::{HashMap, HashSet, VecDeque};

use inbetweenies_proto::{Entity, Version};

/// Where the resolver looks up earlier versions of an entity (the store
/// implements it over its immutable rows).
///
/// Lookups are by version string alone: the resolver only asks about
/// versions named in the `parent_versions` of the entity being resolved.
pub trait Ancestry {
    /// The stored version with this version string, if known.
    fn version(&self, v: &Version) -> Option<Entity>;
}

/// An [`Ancestry`] that knows no versions: a three-way merge always falls
/// back to last-write-wins.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAncestry;

impl Ancestry for NoAncestry {
    fn version(&self, _v: &Version) -> Option<Entity> {
        None
    }
}

/// An [`Ancestry`] over an in-memory map from version string to entity.
#[derive(Clone, Debug, Default)]
pub struct MapAncestry {
    versions: HashMap<Version, Entity>,
}

impl MapAncestry {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a version.
    pub fn insert(&mut self, entity: Entity) {
        self.versions.insert(entity.version.clone(), entity);
    }

    /// How many versions the map holds.
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }
}

impl FromIterator<Entity> for MapAncestry {
    fn from_iter<I: IntoIterator<Item = Entity>>(iter: I) -> Self {
        let mut map = MapAncestry::new();
        for e in iter {
            map.insert(e);
        }
        map
    }
}

impl Extend<Entity> for MapAncestry {
    fn extend<I: IntoIterator<Item = Entity>>(&mut self, iter: I) {
        for e in iter {
            self.insert(e);
        }
    }
}

impl Ancestry for MapAncestry {
    fn version(&self, v: &Version) -> Option<Entity> {
        self.versions.get(v).cloned()
    }
}

impl Ancestry for HashMap<Version, Entity> {
    fn version(&self, v: &Version) -> Option<Entity> {
        self.get(v).cloned()
    }
}

impl<A: Ancestry + ?Sized> Ancestry for &A {
    fn version(&self, v: &Version) -> Option<Entity> {
        (**self).version(v)
    }
}

/// The most recent common ancestor of `a` and `b` in the `parent_versions`
/// DAG, looking at most `max_visits` versions on each side.
///
/// Each side's ancestors (itself included) are walked breadth-first through
/// `ancestry`, each version looked up once; versions the lookup does not
/// know end that path. Of the versions both walks reach, the one with the
/// latest `updated_at` (then the greatest version string) is returned, so
/// the answer does not depend on the order of the arguments. `None` when
/// the walks never meet.
pub fn common_ancestor(
    a: &Entity,
    b: &Entity,
    ancestry: &dyn Ancestry,
    max_visits: usize,
) -> Option<Entity> {
    let mut walker = Walker {
        a,
        b,
        ancestry,
        looked_up: HashMap::new(),
    };
    let a_side = walker.walk(a, max_visits, None);
    let common = walker.walk(b, max_visits, Some(&a_side));
    let best = common
        .iter()
        .filter_map(|v| walker.get(v))
        .max_by(|x, y| {
            x.updated_at
                .cmp(&y.updated_at)
                .then_with(|| x.version.cmp(&y.version))
        })?
        .version
        .clone();
    if best == a.version {
        Some(a.clone())
    } else if best == b.version {
        Some(b.clone())
    } else {
        walker.looked_up.remove(&best).flatten()
    }
}

/// Walks ancestors, looking each version up at most once.
struct Walker<'a> {
    a: &'a Entity,
    b: &'a Entity,
    ancestry: &'a dyn Ancestry,
    looked_up: HashMap<Version, Option<Entity>>,
}

impl Walker<'_> {
    fn get(&self, v: &Version) -> Option<&Entity> {
        if *v == self.a.version {
            Some(self.a)
        } else if *v == self.b.version {
            Some(self.b)
        } else {
            self.looked_up.get(v).and_then(Option::as_ref)
        }
    }

    fn ensure(&mut self, v: &Version) -> bool {
        if *v == self.a.version || *v == self.b.version {
            return true;
        }
        if !self.looked_up.contains_key(v) {
            let found = self.ancestry.version(v);
            self.looked_up.insert(v.clone(), found);
        }
        matches!(self.looked_up.get(v), Some(Some(_)))
    }

    /// Walks `start`'s ancestors breadth-first. Without `stop_at`, returns
    /// every version reached. With it, returns only the versions reached
    /// that are in `stop_at`, and does not walk past them (their ancestors
    /// are older common ancestors).
    fn walk(
        &mut self,
        start: &Entity,
        max_visits: usize,
        stop_at: Option<&HashSet<Version>>,
    ) -> HashSet<Version> {
        let mut out = HashSet::new();
        let mut seen: HashSet<Version> = HashSet::new();
        let mut queue: VecDeque<Version> = VecDeque::new();
        seen.insert(start.version.clone());
        queue.push_back(start.version.clone());
        let mut visits = 0usize;
        while let Some(v) = queue.pop_front() {
            visits += 1;
            let is_common = stop_at.is_some_and(|stop| stop.contains(&v));
            if stop_at.is_none() || is_common {
                out.insert(v.clone());
            }
            if is_common || visits >= max_visits {
                continue;
            }
            let parents = match self.get(&v) {
                Some(e) => e.parent_versions.clone(),
                None => continue,
            };
            for p in parents {
                if seen.insert(p.clone()) && self.ensure(&p) {
                    queue.push_back(p);
                }
            }
        }
        out
    }
}

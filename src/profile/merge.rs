//! [`Profile::merge`]: runs added up through their histograms.

use std::collections::BTreeMap;

use super::{
    CorrectedCounts, CorrectedProfile, Profile, ProfileConfig, ProfileError, ProfileMeta,
    StageCounts, StageProfile,
};

fn merge_error(message: String) -> ProfileError {
    ProfileError::Merge { message }
}

/// The stages of one key across the inputs, in input order: (input index, stage).
type Group<'a> = Vec<(usize, &'a StageProfile)>;

pub(super) fn merge(name: &str, profiles: &[Profile]) -> Result<Profile, ProfileError> {
    check_inputs(profiles)?;
    // Group first (stage key → its entries, in order of first appearance), checking what can be
    // checked without histograms; then build each stage's sum, encode it and drop it, so at most
    // two dense histograms (the sum and one input's) are alive at once, not one per stage.
    let groups = group_stages(profiles)?;
    let mut stages = Vec::with_capacity(groups.len());
    for group in groups {
        stages.push(merge_group(profiles, &group)?);
    }
    Ok(Profile::new(merged_meta(name, profiles), stages))
}

/// At least one input, each valid, all with the first's histogram settings.
fn check_inputs(profiles: &[Profile]) -> Result<(), ProfileError> {
    let Some(first) = profiles.first() else {
        return Err(merge_error(
            "no profiles given: pass at least one".to_owned(),
        ));
    };
    let config = &first.meta.config;
    for (i, p) in profiles.iter().enumerate() {
        p.validate().map_err(|e| {
            merge_error(format!(
                "input {i} ({:?}) is not a valid profile: {e}",
                p.meta.name
            ))
        })?;
        let theirs = &p.meta.config;
        if (theirs.significant_digits, theirs.highest_ns)
            != (config.significant_digits, config.highest_ns)
        {
            return Err(merge_error(format!(
                "input {i} ({:?}) has histograms of {} significant digits up to {} ns, input 0 \
                 ({:?}) of {} up to {} ns: merge only profiles taken with the same histogram \
                 settings",
                p.meta.name,
                theirs.significant_digits,
                theirs.highest_ns,
                first.meta.name,
                config.significant_digits,
                config.highest_ns
            )));
        }
    }
    Ok(())
}

/// The inputs' stages grouped by key, in order of first appearance; refuses a stage without
/// the histograms a sum needs, and one that cannot join its group.
fn group_stages(profiles: &[Profile]) -> Result<Vec<Group<'_>>, ProfileError> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for (i, p) in profiles.iter().enumerate() {
        for stage in &p.stages {
            let key = stage.key();
            check_histograms(&key, i, p, stage)?;
            match index.get(&key) {
                None => {
                    index.insert(key, groups.len());
                    groups.push(vec![(i, stage)]);
                }
                Some(&g) => {
                    check_joins(&key, profiles, &groups[g], i, stage)?;
                    groups[g].push((i, stage));
                }
            }
        }
    }
    Ok(groups)
}

/// Refuses a stage of input `i` without a histogram, or corrected without a corrected one.
fn check_histograms(
    key: &str,
    i: usize,
    p: &Profile,
    stage: &StageProfile,
) -> Result<(), ProfileError> {
    let no_corrected_histogram = stage
        .corrected
        .as_ref()
        .is_some_and(|c| c.histogram.is_none());
    if stage.histogram.is_none() || no_corrected_histogram {
        let which = if no_corrected_histogram {
            "no corrected histogram"
        } else {
            "no histogram"
        };
        return Err(merge_error(format!(
            "stage {key} of input {i} ({:?}) has {which}: percentiles cannot be \
             added up without one; take the profile with a collector, or leave the \
             stage out",
            p.meta.name
        )));
    }
    Ok(())
}

/// Refuses a stage of input `i` whose deadline differs from its group's, or whose expected
/// interval differs from the first input that corrected the stage.
fn check_joins(
    key: &str,
    profiles: &[Profile],
    group: &[(usize, &StageProfile)],
    i: usize,
    stage: &StageProfile,
) -> Result<(), ProfileError> {
    let (j, first) = group[0];
    if first.deadline_ns != stage.deadline_ns {
        return Err(merge_error(format!(
            "stage {key} has deadline {} in input {j} ({:?}) but {} in input {i} \
             ({:?}): its misses were counted against different deadlines and \
             cannot be added up; merge runs taken with the same deadline, or \
             leave the stage out",
            deadline(first.deadline_ns),
            profiles[j].meta.name,
            deadline(stage.deadline_ns),
            profiles[i].meta.name
        )));
    }
    // The first input that corrected this stage, against this one.
    if let Some(c) = &stage.corrected
        && let Some((j, first)) = group
            .iter()
            .find_map(|(j, s)| Some((*j, s.corrected.as_ref()?)))
        && first.expected_interval_ns != c.expected_interval_ns
    {
        return Err(ProfileError::IntervalMismatch {
            stage: key.to_owned(),
            first: (j, first.expected_interval_ns),
            other: (i, c.expected_interval_ns),
        });
    }
    Ok(())
}

/// One stage's sum over its group: histograms added, counters summed, figures recomputed, and
/// the corrected figures likewise.
fn merge_group(
    profiles: &[Profile],
    group: &[(usize, &StageProfile)],
) -> Result<StageProfile, ProfileError> {
    let decode = |stage: &StageProfile| {
        stage
            .histogram()
            .map(|h| h.expect("stages without a histogram were refused above"))
    };
    let (_, first) = group[0];
    let key = first.key();
    let mut hist = decode(first)?;
    let mut counts = counts_of(first);
    let mut recorded = first.count > 0;
    for &(i, stage) in &group[1..] {
        hist.add(&decode(stage)?).map_err(|e| {
            merge_error(format!(
                "stage {key} of input {i} ({:?}): {e}",
                profiles[i].meta.name
            ))
        })?;
        add(&mut counts, &counts_of(stage), recorded, stage.count > 0);
        recorded |= stage.count > 0;
    }
    let mut stage =
        StageProfile::from_histogram(first.name.clone(), first.labels.clone(), &hist, counts)
            .map_err(|e| merge_error(format!("stage {key}: {e}")))?;
    drop(hist);
    stage.corrected = merge_corrected(&key, profiles, group)?;
    Ok(stage)
}

/// The figures of `stage` that its histogram does not hold.
fn counts_of(stage: &StageProfile) -> StageCounts {
    StageCounts {
        min_ns: stage.min_ns,
        max_ns: stage.max_ns,
        sum_ns: stage.sum_ns,
        deadline_ns: stage.deadline_ns,
        deadline_misses: stage.deadline_misses,
        dropped: stage.dropped,
        sampled_out: stage.sampled_out,
        cancelled: stage.cancelled,
        saturated: stage.saturated,
        unwound: stage.unwound,
        in_rings: stage.in_rings,
    }
}

fn corrected_counts_of(c: &CorrectedProfile) -> CorrectedCounts {
    CorrectedCounts {
        expected_interval_ns: c.expected_interval_ns,
        min_ns: c.min_ns,
        max_ns: c.max_ns,
        sum_ns: c.sum_ns,
        synthesized: c.synthesized,
        truncated: c.truncated,
        saturated: c.saturated,
    }
}

/// The corrected figures of one stage over the inputs that have them (their intervals were
/// checked to agree): histograms added, counters summed, figures recomputed. An input that did
/// not correct the stage adds nothing to them. `None` when no input corrected it.
fn merge_corrected(
    key: &str,
    profiles: &[Profile],
    group: &[(usize, &StageProfile)],
) -> Result<Option<CorrectedProfile>, ProfileError> {
    let mut members = group
        .iter()
        .filter_map(|(i, s)| Some((*i, s.corrected.as_ref()?)));
    let Some((_, first)) = members.next() else {
        return Ok(None);
    };
    let decode = |c: &CorrectedProfile| {
        c.histogram()
            .map(|h| h.expect("stages without a corrected histogram were refused above"))
    };
    let mut hist = decode(first)?;
    let mut counts = corrected_counts_of(first);
    let mut recorded = first.count > 0;
    for (i, c) in members {
        hist.add(&decode(c)?).map_err(|e| {
            merge_error(format!(
                "stage {key} of input {i} ({:?}), corrected histogram: {e}",
                profiles[i].meta.name
            ))
        })?;
        add_corrected(&mut counts, &corrected_counts_of(c), recorded, c.count > 0);
        recorded |= c.count > 0;
    }
    CorrectedProfile::from_histogram(&hist, counts)
        .map(Some)
        .map_err(|e| merge_error(format!("stage {key}, corrected figures: {e}")))
}

/// A deadline for a message, exact (`2000000 ns`: a rounded form could show two different
/// deadlines alike), or `none`.
fn deadline(ns: Option<u64>) -> String {
    ns.map_or_else(|| "none".to_owned(), |ns| format!("{ns} ns"))
}

/// Adds `b` into `a`. Min and max come only from inputs that recorded something (the others
/// carry 0). Deadlines that differ resolve to the largest, the most lenient one: only a
/// collector's stages of one key registered with labels in another order get here with
/// different deadlines; [`merge`] refuses inputs whose deadlines differ.
pub(super) fn add(a: &mut StageCounts, b: &StageCounts, a_recorded: bool, b_recorded: bool) {
    add_range(
        (&mut a.min_ns, &mut a.max_ns),
        (b.min_ns, b.max_ns),
        a_recorded,
        b_recorded,
    );
    a.sum_ns = a.sum_ns.saturating_add(b.sum_ns);
    a.deadline_ns = a.deadline_ns.max(b.deadline_ns);
    a.deadline_misses = a.deadline_misses.saturating_add(b.deadline_misses);
    a.dropped = a.dropped.saturating_add(b.dropped);
    a.sampled_out = a.sampled_out.saturating_add(b.sampled_out);
    a.cancelled = a.cancelled.saturating_add(b.cancelled);
    a.saturated = a.saturated.saturating_add(b.saturated);
    a.unwound = a.unwound.saturating_add(b.unwound);
    a.in_rings = a.in_rings.saturating_add(b.in_rings);
}

/// Adds `b`'s corrected figures to `a`'s (`*_recorded`: whether each side holds any value; the
/// expected interval stays `a`'s).
pub(super) fn add_corrected(
    a: &mut CorrectedCounts,
    b: &CorrectedCounts,
    a_recorded: bool,
    b_recorded: bool,
) {
    add_range(
        (&mut a.min_ns, &mut a.max_ns),
        (b.min_ns, b.max_ns),
        a_recorded,
        b_recorded,
    );
    a.sum_ns = a.sum_ns.saturating_add(b.sum_ns);
    a.synthesized = a.synthesized.saturating_add(b.synthesized);
    a.truncated = a.truncated.saturating_add(b.truncated);
    a.saturated = a.saturated.saturating_add(b.saturated);
}

/// The min and max of two groups of values, either of which may hold none (then its own min
/// and max mean nothing).
fn add_range(a: (&mut u64, &mut u64), b: (u64, u64), a_recorded: bool, b_recorded: bool) {
    match (a_recorded, b_recorded) {
        (true, true) => {
            *a.0 = (*a.0).min(b.0);
            *a.1 = (*a.1).max(b.1);
        }
        (false, true) => (*a.0, *a.1) = b,
        _ => {}
    }
}

fn merged_meta(name: &str, profiles: &[Profile]) -> ProfileMeta {
    let first = &profiles[0].meta;
    let metas = || profiles.iter().map(|p| &p.meta);
    let mut hosts: Vec<&str> = Vec::new();
    for host in metas().flat_map(|m| m.host.split(',')) {
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    let tags = first
        .tags
        .iter()
        .filter(|(k, v)| metas().all(|m| m.tags.get(*k) == Some(*v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let git_revision = first
        .git_revision
        .clone()
        .filter(|r| metas().all(|m| m.git_revision.as_ref() == Some(r)));
    ProfileMeta {
        name: name.to_owned(),
        started_unix_ms: metas().map(|m| m.started_unix_ms).min().unwrap_or(0),
        ended_unix_ms: metas().map(|m| m.ended_unix_ms).max().unwrap_or(0),
        host: hosts.join(","),
        git_revision,
        tags,
        config: ProfileConfig {
            // The lowest: figures from runs sampled at different rates were sampled at least
            // this much.
            sampling_rate: metas()
                .map(|m| m.config.sampling_rate)
                .fold(first.config.sampling_rate, f64::min),
            ..first.config.clone()
        },
        merged_from: metas().map(|m| m.name.clone()).collect(),
        backwards_spans: metas()
            .map(|m| m.backwards_spans)
            .fold(0, u64::saturating_add),
    }
}

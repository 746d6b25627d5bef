//! What keepalived passes to hooks. `notify` appends `INSTANCE|GROUP NAME STATE
//! PRIORITY` to the configured words; `notify_master` and friends append nothing.

use crate::bindings::types::{Transition, VrrpState};
use crate::error::{Error, Result};

/// Splits a notify hook's arguments into the plugin's own arguments and the
/// transition keepalived appended, if any. Trailing words that start like a
/// transition (`INSTANCE` or `GROUP` fourth from the end) but are malformed are a
/// usage error rather than being passed on as plugin arguments.
pub fn split_transition(args: &[String]) -> Result<(Vec<String>, Option<Transition>)> {
    if args.len() < 4 {
        return Ok((args.to_vec(), None));
    }
    let (own, tail) = args.split_at(args.len() - 4);
    let group = match tail[0].as_str() {
        "INSTANCE" => false,
        "GROUP" => true,
        _ => return Ok((args.to_vec(), None)),
    };
    let state = parse_state(&tail[2]).ok_or_else(|| {
        Error::usage(format!(
            "malformed keepalived notify arguments `{}`: unknown state `{}`",
            tail.join(" "),
            tail[2]
        ))
    })?;
    let priority = tail[3].parse().map_err(|_| {
        Error::usage(format!(
            "malformed keepalived notify arguments `{}`: priority `{}` is not a number",
            tail.join(" "),
            tail[3]
        ))
    })?;
    let transition = Transition {
        group,
        name: tail[1].clone(),
        state,
        priority,
    };
    Ok((own.to_vec(), Some(transition)))
}

pub fn parse_state(word: &str) -> Option<VrrpState> {
    Some(match word {
        "MASTER" => VrrpState::Master,
        "BACKUP" => VrrpState::Backup,
        "FAULT" => VrrpState::Fault,
        "STOP" => VrrpState::Stop,
        "DELETED" => VrrpState::Deleted,
        _ => return None,
    })
}

pub fn state_word(state: VrrpState) -> &'static str {
    match state {
        VrrpState::Master => "MASTER",
        VrrpState::Backup => "BACKUP",
        VrrpState::Fault => "FAULT",
        VrrpState::Stop => "STOP",
        VrrpState::Deleted => "DELETED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn notify_arguments_are_split_off() {
        let (own, transition) =
            split_transition(&words("--wait=yes INSTANCE VI_1 MASTER 101")).unwrap();
        assert_eq!(own, words("--wait=yes"));
        let transition = transition.unwrap();
        assert!(!transition.group);
        assert_eq!(transition.name, "VI_1");
        assert_eq!(transition.state, VrrpState::Master);
        assert_eq!(transition.priority, 101);
    }

    #[test]
    fn notify_star_lines_carry_no_transition() {
        let (own, transition) = split_transition(&words("--kill=yes")).unwrap();
        assert_eq!(own, words("--kill=yes"));
        assert!(transition.is_none());
        let (own, transition) = split_transition(&words("a b c d e")).unwrap();
        assert_eq!(own.len(), 5);
        assert!(transition.is_none());
    }

    #[test]
    fn malformed_transition_is_a_usage_error() {
        let err = split_transition(&words("GROUP G1 SLEEPING 100")).unwrap_err();
        assert!(matches!(err, Error::Usage(_)));
        assert!(err.message().contains("unknown state `SLEEPING`"));
        let err = split_transition(&words("INSTANCE VI_1 BACKUP high")).unwrap_err();
        assert!(err.message().contains("priority `high`"));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn word() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("INSTANCE".to_string()),
                Just("GROUP".to_string()),
                Just("MASTER".to_string()),
                Just("BACKUP".to_string()),
                Just("DELETED".to_string()),
                "-?[0-9]{1,7}",
                Just(String::new()),
                any::<String>(),
            ]
        }

        fn state() -> impl Strategy<Value = VrrpState> {
            prop_oneof![
                Just(VrrpState::Master),
                Just(VrrpState::Backup),
                Just(VrrpState::Fault),
                Just(VrrpState::Stop),
                Just(VrrpState::Deleted),
            ]
        }

        proptest! {
            #![proptest_config(crate::proptest_config(2000))]

            #[test]
            fn any_words_split_or_say_what_is_malformed(args in prop::collection::vec(word(), 0..8)) {
                match split_transition(&args) {
                    Ok((own, Some(_))) => {
                        prop_assert_eq!(own.len() + 4, args.len());
                        prop_assert_eq!(&own[..], &args[..own.len()]);
                    }
                    Ok((own, None)) => prop_assert_eq!(own, args),
                    Err(error) => {
                        prop_assert!(matches!(error, Error::Usage(_)));
                        prop_assert!(error.message().starts_with("malformed keepalived notify arguments"));
                    }
                }
            }

            #[test]
            fn a_transition_keepalived_appends_comes_back_as_written(
                own in prop::collection::vec(word(), 0..4),
                group in any::<bool>(),
                name in any::<String>(),
                state in state(),
                priority in any::<u16>(),
            ) {
                let mut args = own.clone();
                args.extend([
                    if group { "GROUP" } else { "INSTANCE" }.to_string(),
                    name.clone(),
                    state_word(state).to_string(),
                    priority.to_string(),
                ]);
                let (rest, transition) = split_transition(&args).unwrap();
                let transition = transition.unwrap();
                prop_assert_eq!(rest, own);
                prop_assert_eq!(transition.group, group);
                prop_assert_eq!(transition.name, name);
                prop_assert_eq!(transition.state, state);
                prop_assert_eq!(transition.priority, priority);
            }
        }
    }
}

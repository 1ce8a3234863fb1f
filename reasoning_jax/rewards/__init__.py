"""Host-side rewards: answer extraction, math/QA verification, shaping, worker pool.

Never imports jax: this runs in the trainer's host process and in worker processes.
"""
from reasoning_jax.rewards.base import (EXCEPTION, OK, REASONS, TIMEOUT,
                                        UNPARSABLE_ANSWER, UNPARSABLE_GOLD, Outcome,
                                        Reward, RewardError, RewardItem,
                                        UnparsableAnswer, UnparsableGold, score_item)
from reasoning_jax.rewards.countdown import (ExpressionError, check_countdown,
                                             evaluate_expression)
from reasoning_jax.rewards.extraction import STYLES, extract_answer, last_boxed
from reasoning_jax.rewards.math_equiv import (Verdict, answers_match,
                                              check_equivalence, parse_number)
from reasoning_jax.rewards.qa import (qa_exact_match, qa_f1, qa_normalize,
                                      qa_substring_match)
from reasoning_jax.rewards.registry import REWARDS, get_reward
from reasoning_jax.rewards.runner import BatchResult, RewardRunner, make_items
from reasoning_jax.rewards.scoring import score_examples
from reasoning_jax.rewards.shaping import (answer_format_reward, combine_rewards,
                                           dapo_overlong_penalty, laser_d_rewards,
                                           laser_d_targets, laser_rewards,
                                           parse_confidence, rlcr_reward,
                                           think_format_reward)

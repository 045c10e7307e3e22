"""Generation: `GenerationMixin.generate`, logits processors, stopping criteria and `set_seed`.

Streamers are transformers' own (`TextStreamer`, `TextIteratorStreamer`): they only decode token ids,
which we hand them as numpy arrays.
"""
from .logits_process import (ForcedBOSTokenLogitsProcessor, ForcedEOSTokenLogitsProcessor,
                             InfNanRemoveLogitsProcessor, LogitNormalization, LogitsProcessor, LogitsProcessorList,
                             LogitsWarper, MinLengthLogitsProcessor, MinNewTokensLengthLogitsProcessor,
                             MinPLogitsWarper, NoRepeatNGramLogitsProcessor, RepetitionPenaltyLogitsProcessor,
                             SuppressTokensAtBeginLogitsProcessor, SuppressTokensLogitsProcessor,
                             TemperatureLogitsWarper, TopKLogitsWarper,
                             TopPLogitsWarper)
from .stopping_criteria import (EosTokenCriteria, MaxLengthCriteria, MaxTimeCriteria, StoppingCriteria,
                                StoppingCriteriaList, StopStringCriteria)
from .utils import (BeamSearchDecoderOnlyOutput, GenerateBeamDecoderOnlyOutput, GenerateDecoderOnlyOutput,
                    GenerationMixin, GreedySearchDecoderOnlyOutput, SampleDecoderOnlyOutput, set_seed)

__all__ = [name for name in dir() if not name.startswith("_") and name[0].isupper()] + ["set_seed"]

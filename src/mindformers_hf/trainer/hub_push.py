"""Hub push for the Trainer: `push_to_hub=True` (hub_strategy "every_save" / "end") and
`trainer.push_to_hub()`, as transformers commits them (synchronously here). Uploads go through
hub.push_folder_to_hub.

Reads from the Trainer: args, state; calls its save_model.
"""
import os

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..utils import warn_once
from . import checkpointing as ckpt


class HubPushMixin:
    def _hub_repo_id(self):
        return self.args.hub_model_id or os.path.basename(os.path.abspath(self.args.output_dir))

    def _push_folder(self, folder, commit_message, ignore_patterns=None, revision=None, token=None):
        from ..hub import push_folder_to_hub

        return push_folder_to_hub(folder, self._hub_repo_id(), commit_message=commit_message,
                                  token=token or self.args.hub_token, private=self.args.hub_private_repo,
                                  revision=revision or self.args.hub_revision, ignore_patterns=ignore_patterns)

    def _push_from_checkpoint(self, checkpoint_dir):
        """push_to_hub=True, hub_strategy "every_save": each checkpoint's model files (not its optimizer,
        schedule or RNG state) become the repo's head, as transformers pushes them (synchronously here)."""
        state_files = [ckpt.OPTIMIZER_NAME, ckpt.OPTIMIZER_META_NAME, ckpt.SCHEDULER_NAME, ckpt.SCALER_NAME,
                       ckpt.RNG_STATE_NAME, ckpt.TRAINER_STATE_NAME]
        self._push_folder(checkpoint_dir, f"Training in progress, step {self.state.global_step}",
                          ignore_patterns=state_files)

    def push_to_hub(self, commit_message="End of training", blocking=True, token=None, revision=None, **kwargs):
        """transformers' Trainer.push_to_hub: save the model into output_dir and commit that folder (without
        its checkpoint-* subfolders) to `hub_model_id` (default: the output_dir's name). Rank 0 pushes; as
        save_model, it waits for no other rank (rank 0 alone may call it)."""
        for key in kwargs:
            warn_once(f"Trainer.push_to_hub: keyword {key!r} is accepted for compatibility and ignored")
        if not blocking:
            warn_once("Trainer.push_to_hub(blocking=False): the push runs synchronously here")
        self.save_model(_internal_call=True)
        info = None
        if self.args.should_save:
            info = self._push_folder(self.args.output_dir, commit_message, token=token, revision=revision,
                                     ignore_patterns=[f"{PREFIX_CHECKPOINT_DIR}-*", f"{PREFIX_CHECKPOINT_DIR}-*/*",
                                                      "runs/*"])
        return info


"""The ``promix:`` config section (not registered here; the integrator adds it to the method registry).

Defaults are the reference's settings for CIFAR-10 at 50% symmetric and 40% asymmetric noise and for
CIFAR-10N aggre/rand1/worst (Justherozen/ProMix, run.sh); ``/work/shared/reference/promix.md`` lists the
others (CIFAR-10 sym 20%: rho 0.7; CIFAR-100: tau 0.95, warm-up 30, debias 0.5/0.5). Every epoch count
below is an absolute epoch index from 0, warm-up included, as the reference counts them.
"""

from __future__ import annotations

from dataclasses import dataclass

from tcl_lite.config import ConfigError, opt


@dataclass
class ProMixConfig:
    warmup_epochs: int = opt(10, "Epochs of plain CE on the noisy labels (weak view, both networks, primary "
                             "head h only) before the first selection (reference `pretrain_ep`: 10 on CIFAR-10 "
                             "and CIFAR-10N, 30 on CIFAR-100 and CIFAR-100N).", ge=0)
    warmup_penalty: str = opt("auto", "Add each network's negative entropy (on logits clamped to >= 1e-12, as "
                              "the reference) to the warm-up CE: `auto` = on for asymmetric noise (reference "
                              "`noise_mode=asym`), `on`, `off`.", choices=("auto", "on", "off"))
    rho_start: float = opt(0.5, "Class-wise small-loss selection: fraction rho of N/K kept per noisy class "
                           "at epoch 0 (reference `rho_range` first value; run.sh sets rho_start = rho_end: "
                           "0.5, and 0.7 at 20% symmetric noise).", gt=0.0, le=1.0)
    rho_end: float = opt(0.5, "rho after the ramp: rho = rho_start + (rho_end - rho_start) * "
                         "min(epoch / rho_ramp_epochs, 1) (reference `rho_range` second value).", gt=0.0, le=1.0)
    rho_ramp_epochs: int = opt(50, "Epochs of the linear ramp of rho (reference `warmup_ep`: 50).", ge=0)
    tau: float = opt(0.99, "Matched high-confidence selection: a sample is also clean when softmax(h(x))[y] > tau "
                     "(raw logits); label guessing requires both networks' max-probability > tau (reference: "
                     "0.99 on CIFAR-10/10N, 0.95 on CIFAR-100/100N).", gt=0.0, le=1.0)
    start_expand: int = opt(250, "Label guessing by agreement (LGA) runs in the last `start_expand` epochs: while "
                            "epoch > last epoch - start_expand (reference: 250 of epochs 0..600, so from epoch "
                            "351); 0 = never.", ge=0)
    lga_cap: float = opt(0.9, "LGA adds samples only while the clean set is below lga_cap of the batch, and up "
                         "to int(batch * lga_cap) in all (reference `threshold`: 0.9).", gt=0.0, le=1.0)
    debias_output: float = opt(0.8, "a: every loss uses the debiased logits z + a log(pi) (pi_l for the clean "
                               "set, pi_u for the unlabeled term) (reference `debias_output`: 0.8 on CIFAR-10/10N, "
                               "0.5 on CIFAR-100/100N).", ge=0.0)
    debias_pl: float = opt(0.8, "b: pseudo-labels are softmax(z_h(x) - b log(pi)) (reference `debias_pl`: 0.8 on "
                           "CIFAR-10/10N, 0.5 on CIFAR-100/100N). 0 also fixes the unlabeled weight beta at 1, "
                           "as the reference does.", ge=0.0)
    prior_momentum: float = opt(0.9999, "Momentum m of the class priors: pi <- m pi + (1 - m) mean softmax(h(x)) "
                                "over the clean (pi_l) or the unlabeled (pi_u) samples of each step (reference "
                                "`bias_m`: 0.9999).", ge=0.0, le=1.0)
    temperature: float = opt(0.5, "Sharpening temperature T of the unlabeled term's pseudo-labels (reference "
                             "`T`: 0.5).", gt=0.0)
    mixup_alpha: float = opt(4.0, "Beta(a, a) of mixup's lambda on the clean weak images, then lambda = "
                             "max(lambda, 1 - lambda) (reference: 4).", gt=0.0)
    fmix_alpha: float = opt(1.0, "Beta(a, a) of FMix's lambda, the mask's mean (reference FMix(): alpha 1).",
                            gt=0.0)
    fmix_decay: float = opt(3.0, "Decay power d of FMix's Fourier spectrum, 1/f^d (reference FMix(): 3).", gt=0.0)
    w_ramp_epochs: int = opt(50, "Weight w of the consistency, mixup and FMix terms (and of the strong-view half "
                             "of the unlabeled term): w = min(epoch / w_ramp_epochs, 1) (reference `warmup_ep`: "
                             "50).", ge=0)
    unlabeled_weight: float = opt(0.1, "beta, the unlabeled term's weight: beta = unlabeled_weight * "
                                  "min(epoch / unlabeled_epochs, 1) before epoch unlabeled_epochs, then 0 if it is "
                                  "below 1 (reference: 0.1; 1 at every epoch when debias_pl = 0).", ge=0.0)
    unlabeled_epochs: int = opt(100, "Epoch at which the unlabeled term switches off; its weight ramps up "
                                "until then (reference: 2 * warmup_ep = 100).", ge=0)
    eval_output: str = opt("net1_ap", "Output reported as test accuracy: network 1's auxiliary pseudo head "
                           "(`net1_ap`, the only one in the reference's accuracy log), network 2's (`net2_ap`), "
                           "or the mean of both networks' primary-head logits (`mean_h`, also printed).",
                           choices=("net1_ap", "net2_ap", "mean_h"))

    def validate(self) -> None:
        if self.rho_ramp_epochs == 0 and self.rho_start != self.rho_end:
            raise ConfigError(f"config key 'promix.rho_start' ({self.rho_start}) is never used with "
                              "promix.rho_ramp_epochs=0 (rho is rho_end from epoch 0): set rho_start = rho_end "
                              "or rho_ramp_epochs > 0")
        if self.unlabeled_epochs == 0 and self.unlabeled_weight > 0 and self.debias_pl > 0:
            raise ConfigError("config key 'promix.unlabeled_epochs'=0 switches the unlabeled term off from epoch 0 "
                              f"although promix.unlabeled_weight={self.unlabeled_weight}: set unlabeled_weight=0 "
                              "to say so, or unlabeled_epochs > 0")

#!/usr/bin/env python3
"""PyTorch CPU reference for `just bench-train`: GANomaly training throughput.

GANomaly (Akcay, Atapour-Abarghouei, Breckon, ACCV 2018) with the DCGAN networks of the
reference implementation (github samet-akcay/ganomaly, lib/networks.py and lib/model.py):
NetG = encoder1 -> decoder -> encoder2, NetD = DCGAN encoder with a sigmoid head whose
penultimate activations are the adversarial feature-matching target.

One step = generator update, then discriminator update, on a fixed random batch in [-1, 1].
Prints one JSON line:
  {"framework": "pytorch", "version": ..., "threads": N, "batch": 64, "size": 32,
   "steps": S, "images_per_s": ..., "ms_per_step": ...}

Usage: python bench/ganomaly_torch.py --threads 2 --batch 64 --size 32 --steps 50 --warmup 5
"""

import argparse
import json
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Encoder(nn.Module):
    """DCGAN encoder: isize x isize x nc -> 1 x 1 x nz (no extra layers, final conv)."""

    def __init__(self, isize, nz, nc, ndf):
        super().__init__()
        assert isize % 16 == 0, "isize has to be a multiple of 16"
        main = nn.Sequential()
        main.add_module(f"initial-conv-{nc}-{ndf}", nn.Conv2d(nc, ndf, 4, 2, 1, bias=False))
        main.add_module(f"initial-relu-{ndf}", nn.LeakyReLU(0.2, inplace=True))
        csize, cndf = isize // 2, ndf
        while csize > 4:
            in_feat, out_feat = cndf, cndf * 2
            main.add_module(
                f"pyramid-{in_feat}-{out_feat}-conv",
                nn.Conv2d(in_feat, out_feat, 4, 2, 1, bias=False),
            )
            main.add_module(f"pyramid-{out_feat}-batchnorm", nn.BatchNorm2d(out_feat))
            main.add_module(f"pyramid-{out_feat}-relu", nn.LeakyReLU(0.2, inplace=True))
            cndf *= 2
            csize //= 2
        main.add_module(f"final-{cndf}-{nz}-conv", nn.Conv2d(cndf, nz, 4, 1, 0, bias=False))
        self.main = main

    def forward(self, x):
        return self.main(x)


class Decoder(nn.Module):
    """DCGAN decoder: 1 x 1 x nz -> isize x isize x nc, tanh output."""

    def __init__(self, isize, nz, nc, ngf):
        super().__init__()
        assert isize % 16 == 0, "isize has to be a multiple of 16"
        cngf, tisize = ngf // 2, 4
        while tisize != isize:
            cngf *= 2
            tisize *= 2
        main = nn.Sequential()
        main.add_module(f"initial-{nz}-{cngf}-convt", nn.ConvTranspose2d(nz, cngf, 4, 1, 0, bias=False))
        main.add_module(f"initial-{cngf}-batchnorm", nn.BatchNorm2d(cngf))
        main.add_module(f"initial-{cngf}-relu", nn.ReLU(True))
        csize = 4
        while csize < isize // 2:
            main.add_module(
                f"pyramid-{cngf}-{cngf // 2}-convt",
                nn.ConvTranspose2d(cngf, cngf // 2, 4, 2, 1, bias=False),
            )
            main.add_module(f"pyramid-{cngf // 2}-batchnorm", nn.BatchNorm2d(cngf // 2))
            main.add_module(f"pyramid-{cngf // 2}-relu", nn.ReLU(True))
            cngf //= 2
            csize *= 2
        main.add_module(f"final-{cngf}-{nc}-convt", nn.ConvTranspose2d(cngf, nc, 4, 2, 1, bias=False))
        main.add_module(f"final-{nc}-tanh", nn.Tanh())
        self.main = main

    def forward(self, z):
        return self.main(z)


class NetG(nn.Module):
    def __init__(self, isize, nz, nc, ngf):
        super().__init__()
        self.encoder1 = Encoder(isize, nz, nc, ngf)
        self.decoder = Decoder(isize, nz, nc, ngf)
        self.encoder2 = Encoder(isize, nz, nc, ngf)

    def forward(self, x):
        latent_i = self.encoder1(x)
        fake = self.decoder(latent_i)
        latent_o = self.encoder2(fake)
        return fake, latent_i, latent_o


class NetD(nn.Module):
    def __init__(self, isize, nc, ndf):
        super().__init__()
        layers = list(Encoder(isize, 1, nc, ndf).main.children())
        self.features = nn.Sequential(*layers[:-1])
        self.classifier = nn.Sequential(layers[-1])
        self.classifier.add_module("Sigmoid", nn.Sigmoid())

    def forward(self, x):
        features = self.features(x)
        classifier = self.classifier(features).view(-1, 1).squeeze(1)
        return classifier, features


def weights_init(mod):
    name = mod.__class__.__name__
    if name.find("Conv") != -1:
        mod.weight.data.normal_(0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        mod.weight.data.normal_(1.0, 0.02)
        mod.bias.data.fill_(0)


def l2_loss(a, b):
    return torch.mean(torch.pow(a - b, 2))


class Ganomaly:
    """Training state and one optimisation step, as in the reference's optimize_params."""

    W_ADV, W_CON, W_ENC = 1.0, 50.0, 1.0

    def __init__(self, isize, nz, nc, ngf, ndf, lr=2e-4, beta1=0.5):
        self.netg = NetG(isize, nz, nc, ngf)
        self.netd = NetD(isize, nc, ndf)
        self.netg.apply(weights_init)
        self.netd.apply(weights_init)
        self.netg.train()
        self.netd.train()
        self.optimizer_g = torch.optim.Adam(self.netg.parameters(), lr=lr, betas=(beta1, 0.999))
        self.optimizer_d = torch.optim.Adam(self.netd.parameters(), lr=lr, betas=(beta1, 0.999))

    def step(self, x):
        batch = x.shape[0]
        real_label = torch.ones(batch)
        fake_label = torch.zeros(batch)

        # Generator: feature matching + 50 x L1 reconstruction + latent consistency.
        fake, latent_i, latent_o = self.netg(x)
        _, feat_real = self.netd(x)
        _, feat_fake = self.netd(fake)
        err_g_adv = l2_loss(feat_real, feat_fake)
        err_g_con = F.l1_loss(fake, x)
        err_g_enc = l2_loss(latent_o, latent_i)
        err_g = err_g_adv * self.W_ADV + err_g_con * self.W_CON + err_g_enc * self.W_ENC
        self.optimizer_g.zero_grad()
        err_g.backward()
        self.optimizer_g.step()

        # Discriminator: BCE on real vs detached fake.
        pred_real, _ = self.netd(x)
        pred_fake, _ = self.netd(fake.detach())
        err_d = (F.binary_cross_entropy(pred_real, real_label)
                 + F.binary_cross_entropy(pred_fake, fake_label)) * 0.5
        self.optimizer_d.zero_grad()
        err_d.backward()
        self.optimizer_d.step()

        # The reference re-initialises D when it wins outright.
        if err_d.item() < 1e-5:
            self.netd.apply(weights_init)
        return err_g.item(), err_d.item()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--nc", type=int, default=1)
    p.add_argument("--nz", type=int, default=100)
    p.add_argument("--ngf", type=int, default=64)
    p.add_argument("--ndf", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.threads < 1:
        p.error("--steps >= 1, --warmup >= 0 and --threads >= 1 are required")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = Ganomaly(args.size, args.nz, args.nc, args.ngf, args.ndf)
    gen = torch.Generator().manual_seed(args.seed + 1)
    x = torch.rand(args.batch, args.nc, args.size, args.size, generator=gen) * 2.0 - 1.0

    for _ in range(args.warmup):
        model.step(x)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        err_g, err_d = model.step(x)
    elapsed = time.perf_counter() - t0

    print(json.dumps({
        "framework": "pytorch",
        "version": torch.__version__,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "size": args.size,
        "steps": args.steps,
        "images_per_s": round(args.steps * args.batch / elapsed, 2),
        "ms_per_step": round(1000.0 * elapsed / args.steps, 3),
        "err_g": round(err_g, 5),
        "err_d": round(err_d, 5),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
